"""The machine line of benchmark reports names the CPU's bf16 support."""

from __future__ import annotations

import os

from recllm.bench.machine import cpu_bf16, machine_line


def test_bf16_support_is_read_from_the_cpu_flags():
    assert cpu_bf16("flags\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n") == "AMX-BF16"
    assert cpu_bf16("flags\t: fpu avx2 avx512f avx512_bf16\n") == "AVX512-BF16"
    assert cpu_bf16("flags\t: fpu sse4_2 avx2 fma\n") == "no bf16 (AVX2)"
    assert cpu_bf16("processor\t: 0\n") is None  # no flags line: unknown, not "no bf16"


def test_machine_line_names_the_cores():
    assert f", {os.cpu_count()} cores" in machine_line()

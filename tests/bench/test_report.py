"""recllm.bench.report: the exact markdown of a table; charts written as PNG files."""

from __future__ import annotations

import pytest

from recllm.bench.report import grouped_bars, markdown_table


def test_markdown_table_renders_the_exact_expected_text():
    text = markdown_table(
        ["SIDs", "items", "seconds"], [["rq|kmeans", "1,000", None], ["b", 2, 3.5]]
    )
    assert text == (
        "| SIDs | items | seconds |\n|---|---|---|\n| rq\\|kmeans | 1,000 | - |\n| b | 2 | 3.5 |"
    )


def test_markdown_table_refuses_a_row_of_another_width():
    with pytest.raises(ValueError, match="row 1 has 2 cells, the header 3"):
        markdown_table(["a", "b", "c"], [[1, 2, 3], [1, 2]])


def test_grouped_bars_write_a_png(tmp_path):
    path = grouped_bars(
        {"model A": [0.5, 0.25, 0.1], "model B": [0.4, 0.3, 0.2]},
        ["level 1", "level 2", "level 3"],
        tmp_path / "sub" / "bars.png",
        title="t",
        ylim=(0, 1),
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["bars.png"]  # no temp file left
    with pytest.raises(ValueError, match="series 'x' has 1 values for 2 groups"):
        grouped_bars({"x": [1.0]}, ["a", "b"], tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()

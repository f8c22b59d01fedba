"""recllm.models.resolve_model: paths pass through, known names convert once, the rest fails
with the fix."""

from __future__ import annotations

import json

import pytest

from recllm.errors import UserError
from recllm.models import (
    KNOWN_MODELS,
    SOURCE_RECORD,
    _conversion_record,
    check_model_source,
    converted_dir,
    resolve_model,
)
from recllm.testing import save_tiny_model


def test_existing_directory_passes_through(tmp_path):
    assert resolve_model(tmp_path) == str(tmp_path)


def test_hub_id_is_left_to_transformers():
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


@pytest.mark.parametrize("bad", ["no-such-model", "./missing/dir", "/abs/missing"])
def test_unknown_name_names_the_fix(bad):
    with pytest.raises(UserError) as e:
        resolve_model(bad)
    assert bad in str(e.value) and "Fix:" in str(e.value)
    assert "SmolLM2-135M-Instruct" in str(e.value)


def test_known_name_uses_the_converted_cache_dir(tmp_path, monkeypatch):
    """An already converted model is reused from the cache, not converted again."""
    monkeypatch.setenv("RECLLM_CACHE", str(tmp_path))
    name = next(iter(KNOWN_MODELS))
    done = converted_dir(name)
    assert done == tmp_path / "models" / name
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    (done / SOURCE_RECORD).write_text(json.dumps(_conversion_record(name)))
    assert resolve_model(name) == str(done)


@pytest.mark.parametrize("record", [None, {"name": "SmolLM2-135M-Instruct", "dtype": "bfloat16"}])
def test_a_cached_conversion_without_a_matching_record_is_converted_again(
    tmp_path, monkeypatch, record
):
    """A cache entry left by an interrupted or older conversion is never reused silently."""
    import recllm.models.gguf as gguf

    monkeypatch.setenv("RECLLM_CACHE", str(tmp_path))
    name = next(iter(KNOWN_MODELS))
    done = converted_dir(name)
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    if record is not None:
        (done / SOURCE_RECORD).write_text(json.dumps(record))
    calls = []
    monkeypatch.setattr(gguf, "convert_gguf", lambda *a, **k: calls.append((a, k)))
    assert resolve_model(name) == str(done)
    assert len(calls) == 1 and calls[0][1] == {"overwrite": True}
    assert json.loads((done / SOURCE_RECORD).read_text()) == _conversion_record(name)
    resolve_model(name)  # now recorded: reused
    assert len(calls) == 1


def test_check_model_source_names_what_is_missing(tmp_path):
    base = save_tiny_model(tmp_path / "m")
    check_model_source(str(base))  # complete: passes
    for f in base.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(UserError, match=r"lacks weights") as e:
        check_model_source(str(base))
    assert "Fix:" in str(e.value)
    with pytest.raises(UserError, match="hub id does not resolve"):
        check_model_source("nobody/no-such-model-xyz")

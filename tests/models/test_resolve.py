"""recllm.models.resolve_model: paths pass through, known names convert once, the rest fails
with the fix."""

from __future__ import annotations

import pytest

from recllm.models import KNOWN_MODELS, converted_dir, resolve_model


def test_existing_directory_passes_through(tmp_path):
    assert resolve_model(tmp_path) == str(tmp_path)


def test_hub_id_is_left_to_transformers():
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


@pytest.mark.parametrize("bad", ["no-such-model", "./missing/dir", "/abs/missing"])
def test_unknown_name_names_the_fix(bad):
    with pytest.raises(FileNotFoundError) as e:
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
    assert resolve_model(name) == str(done)

"""DecodeOptions: every setting that cannot decode is refused when made, naming the field and the
fix; :func:`dataclasses.replace` checks again; ``generate_sids`` takes the object as it is."""

from __future__ import annotations

import dataclasses

import pytest

from recllm.decode import DecodeOptions, generate_sids
from recllm.errors import UserError
from tests.decode.test_decode import PROMPTS, extended_model, random_sid_map

pytestmark = pytest.mark.usefixtures("torch_single_thread")

NAN = float("nan")

# (bad settings, the field the error names, part of its Fix, settings that differ only in
# that field and are accepted: the control that the check refuses the value, not the field)
BAD = [
    ({"k": 0}, "k", "k=10", {"k": 1}),
    ({"k": 2.5}, "k", "k=10", {"k": 2}),
    ({"k": True}, "k", "k=10", {"k": 1}),
    ({"batch_size": 0}, "batch_size", "batch_size=8", {"batch_size": 1}),
    ({"num_beams": 0}, "num_beams", "num_beams=k", {"num_beams": 10}),
    ({"k": 5, "num_beams": 3}, "num_beams", "num_beams >= 5", {"k": 5, "num_beams": 5}),
    ({"length_penalty": NAN}, "length_penalty", "length_penalty=1.0", {"length_penalty": 0.0}),
    ({"mode": "sample", "temperature": 0}, "temperature", "temperature > 0",
     {"mode": "sample", "temperature": 0.1}),
    ({"mode": "sample", "temperature": NAN}, "temperature", "temperature > 0",
     {"mode": "sample", "temperature": 2.0}),
    ({"mode": "sample", "top_p": 0.0}, "top_p", "top_p=1.0", {"mode": "sample", "top_p": 0.5}),
    ({"mode": "sample", "top_p": 1.5}, "top_p", "top_p=1.0", {"mode": "sample", "top_p": 1.0}),
    ({"mode": "sample", "top_k": -1}, "top_k", "top_k=None", {"mode": "sample", "top_k": 0}),
    ({"seed": -1}, "seed", "seed=None", {"seed": 0}),
    ({"stop_token_id": -2}, "stop_token_id", "stop_token_id=None", {"stop_token_id": 2}),
    ({"mode": "topk"}, "mode", "mode='beam'", {"mode": "sample"}),
    ({"engine": "vllm"}, "engine", "engine='generate' or 'sid_beam'", {"engine": "sid_beam"}),
    ({"mode": "greedy", "k": 2}, "k", "k=1 or mode='beam'", {"mode": "greedy", "k": 1}),
    ({"mode": "sample", "engine": "sid_beam"}, "engine", "mode='beam'",
     {"mode": "sample", "engine": "generate"}),
    ({"constrained": False, "engine": "sid_beam"}, "engine",
     "engine='generate' for constrained=False", {"constrained": False, "engine": "generate"}),
    ({"stop_after_sid": False}, "stop_after_sid", "constrained=False",
     {"stop_after_sid": False, "constrained": False}),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "field", "fix", "good"), BAD, ids=[str(b[0]) for b in BAD])
def test_each_bad_setting_names_its_field_and_fix(bad, field, fix, good):
    with pytest.raises(UserError) as err:
        DecodeOptions(**bad)
    assert err.value.where == f"DecodeOptions.{field}"
    assert fix in err.value.fix
    assert str(err.value).startswith(f"DecodeOptions.{field}: ")
    assert ". Fix: " in str(err.value)
    assert isinstance(err.value, ValueError)  # callers catching ValueError keep working
    made = DecodeOptions(**good)  # control
    assert all(getattr(made, name) == value for name, value in good.items())


def test_sampling_settings_are_not_checked_where_unused():
    """Beam and greedy search never read temperature / top_p / top_k: a playground sending its
    sample-tab values along with a beam request must not be refused."""
    beam = DecodeOptions(temperature=0.0, top_p=0.0, top_k=-1)
    assert beam.mode == "beam" and beam.temperature == 0.0
    with pytest.raises(UserError, match="temperature"):
        dataclasses.replace(beam, mode="sample")


def test_replace_makes_a_checked_copy():
    base = DecodeOptions(k=5, engine="sid_beam", batch_size=4)
    wide = dataclasses.replace(base, k=20)
    assert (wide.k, wide.num_beams, wide.beams, wide.engine, wide.batch_size) == (
        20, None, 20, "sid_beam", 4,
    )  # fmt: skip
    assert (base.k, base.beams) == (5, 5)  # the original is untouched
    fixed = DecodeOptions(k=5, num_beams=8)
    assert dataclasses.replace(fixed, k=8).beams == 8
    with pytest.raises(UserError, match=r"DecodeOptions\.num_beams: 8 beams cannot return k=9"):
        dataclasses.replace(fixed, k=9)
    with pytest.raises(UserError, match=r"DecodeOptions\.k: greedy decoding"):
        dataclasses.replace(base, mode="greedy", engine="generate")
    greedy = dataclasses.replace(base, mode="greedy", engine="generate", k=1)
    assert (greedy.mode, greedy.k, greedy.beams) == ("greedy", 1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.k = 3  # type: ignore[misc]


def test_chat_template_kwargs_are_a_frozen_copy():
    mine = {"enable_thinking": False}
    opts = DecodeOptions(chat_template_kwargs=mine)
    mine["enable_thinking"] = True
    assert dict(opts.chat_template_kwargs) == {"enable_thinking": False}
    with pytest.raises(TypeError):
        opts.chat_template_kwargs["enable_thinking"] = True  # type: ignore[index]
    assert dataclasses.replace(opts, k=3).chat_template_kwargs == {"enable_thinking": False}


def test_generate_sids_takes_the_options_object():
    sid_map = random_sid_map((4, 5), 18, seed=2)
    model, tok, _ = extended_model(sid_map, seed=3)
    opts = DecodeOptions(k=5, num_beams=5, engine="sid_beam", batch_size=2)
    top5 = generate_sids(model, tok, PROMPTS, sid_map, opts)
    top3 = generate_sids(model, tok, PROMPTS, sid_map, dataclasses.replace(opts, k=3))
    assert [len(r) for r in top5] == [5, 5, 5] and [len(r) for r in top3] == [3, 3, 3]
    # the same 5 beams, cut at 3: the options reached the beam search unchanged
    assert [r[:3] for r in top5] == top3
    again = generate_sids(model, tok, PROMPTS, sid_map, dataclasses.replace(opts, k=5))
    assert again == top5
    with pytest.raises(TypeError, match=r"Fix: generate_sids.*DecodeOptions"):
        generate_sids(model, tok, PROMPTS, sid_map, {"k": 5})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'k'"):
        generate_sids(model, tok, PROMPTS, sid_map, k=5)  # type: ignore[call-arg]

"""The playground's "hide items in the history" toggle (issue 32): the history's items are
excluded inside the SID constraint in beam and sample mode, with a control that shows them."""

from __future__ import annotations

import pytest

from recllm.apps.playground import DecodeSettings, Playground
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Playground:
    return Playground.from_pretrained(save_tiny_recommender(tmp_path_factory.mktemp("pg") / "t"))


def test_hide_history_in_beam_and_sample_mode(pg: Playground):
    ranked = [r.item_id for r in pg.rec.recommend(["item2"], 50, num_beams=50)]
    history = ranked[:4]  # the items the model ranks highest
    text = ", ".join(history)
    shown = pg.run(text, DecodeSettings(k=10, beams=10))  # the control
    assert {r.item_id for r in shown.items} & set(history)
    hidden = pg.run(text, DecodeSettings(k=10, beams=10, exclude_history=True))
    ids = [r.item_id for r in hidden.items]
    assert len(ids) == 10 and not set(ids) & set(history)
    want = pg.rec.recommend(history, 10, num_beams=10, exclude_history=True)
    assert ids == [r.item_id for r in want]
    smaller = pg.run(text, DecodeSettings(k=4, beams=10, exclude_history=True))
    assert [r.item_id for r in smaller.items] == ids[:4]  # width is its own setting
    sampled = DecodeSettings(k=30, mode="sample", temperature=3.0, exclude_history=True)
    drawn = {r.item_id for r in pg.run(text, sampled).items}
    assert drawn and not drawn & set(history)
    control = DecodeSettings(k=30, mode="sample", temperature=3.0)
    assert {r.item_id for r in pg.run(text, control).items} & set(history)


def test_hide_history_needs_the_constraint(pg: Playground):
    with pytest.raises(ValueError, match=r"inside the SID constraint.*Fix"):
        pg.run("item1", DecodeSettings(constrained=False, exclude_history=True))
    raw = [pg.template_text(), True, False, "beam", 5, 3, 1.0, 1.0, True]
    assert pg.settings(raw).exclude_history
    assert not pg.settings(raw[:8]).exclude_history

"""The playground's model side (recllm.apps.playground.Playground), without a browser: what each
configuration decodes, template edits, saving, and the messages bad input gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from recllm.apps.playground import DecodeSettings, Playground, cards_html, spans_html
from recllm.decode.text import resolve_spans
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Playground:
    model = save_tiny_recommender(tmp_path_factory.mktemp("pg") / "tiny", dialogue=True)
    return Playground.from_pretrained(model)


def test_users_and_history(pg: Playground):
    assert len(pg.users) == 40 and all(pg.users.values())
    assert pg.parse_history("item1, item2\nitem3  item4") == ["item1", "item2", "item3", "item4"]
    assert pg.history_markdown("item1,item2") == "1. movie 1 (`item1`)\n2. movie 2 (`item2`)"
    assert "unknown item ids" in pg.history_markdown("item1, nope")
    assert pg.search("movie 1")[:2] == [("item1", "movie 1"), ("item10", "movie 10")]


def test_beam_matches_the_recommender_and_the_constraint_has_a_control(pg: Playground):
    history = ", ".join(pg.users["u3"])
    on = pg.run(history, DecodeSettings(k=5, beams=10))
    want = pg.rec.recommend(pg.users["u3"], 5, num_beams=10)
    assert [r.item_id for r in on.items] == [r.item_id for r in want]
    assert on.invalid == 0 and on.seconds > 0 and "<|im_start|>assistant" in on.prompt
    off = pg.run(history, DecodeSettings(k=5, beams=10, constrained=False))
    assert off.invalid > 0  # the random model's free answers are not catalog SIDs
    assert any(s.match != "exact" for s in off.spans)
    sample = pg.run(history, DecodeSettings(k=6, mode="sample", temperature=1.0))
    assert sample.items and sample.invalid == 0
    html = cards_html(off.items, pg.rec.sid_map, off.seconds)
    assert html.count('class="rl-card invalid"') == off.invalid
    text = "see <|sid_begin|><a_0><b_0><c_0><|sid_end|> & <b>"
    assert "&amp; &lt;b&gt;" in spans_html(text, resolve_spans(text, pg.rec.sid_map))


def test_template_edits_preview_and_save(pg: Playground, tmp_path: Path):
    history = "item1, item2"
    template = pg.template_text()
    edited = template.replace("Which item", "EDITED. Which item")
    assert "EDITED. Which item" in pg.preview(history, edited)
    assert "EDITED" in pg.run(history, DecodeSettings(template=edited, k=3, beams=3)).prompt
    broken = "{% block user %}{{ history | nonsense }}{% endblock %}"
    assert pg.preview(history, broken).startswith("error: template line 1: No filter named")
    with pytest.raises(ValueError, match="template line 1"):
        pg.run(history, DecodeSettings(template=broken))
    # saving checks the template first and writes atomically, inside the prompts folder
    pg = Playground(pg.rec, pg.users, prompts_root=tmp_path)
    with pytest.raises(ValueError, match="template line 1"):
        pg.save_template(broken, "p")
    assert not (tmp_path / "p" / "rec.jinja").exists()
    saved = pg.save_template(edited, "p")
    assert saved == tmp_path.resolve() / "p" / "rec.jinja"
    assert saved.read_text() == edited and [f.name for f in saved.parent.iterdir()] == ["rec.jinja"]
    with pytest.raises(ValueError, match="an absolute path; Fix: name a folder inside"):
        pg.save_template(edited, tmp_path / "q")
    (tmp_path / "link").symlink_to(tmp_path.parent)  # a link out of the folder
    with pytest.raises(ValueError, match="'link/q': leaves the prompts folder; Fix: "):
        pg.save_template(edited, "link/q")
    assert not (tmp_path / "q").exists() and not (tmp_path.parent / "q").exists()


@pytest.mark.parametrize(
    ("history", "settings", "message"),
    [
        ("", DecodeSettings(), "history is empty"),
        ("item1, item999", DecodeSettings(), "unknown item ids ['item999']"),
        ("item1", DecodeSettings(k=12, beams=10), "k (12) > beams (10)"),
        ("item1", DecodeSettings(k=0), "k=0 is out of range"),
        ("item1", DecodeSettings(mode="sample", temperature=0.0), "temperature > 0"),
        ("item1", DecodeSettings(think=True), "was not trained to think"),
    ],
)
def test_bad_input_gets_a_clear_message(pg: Playground, history, settings, message):
    with pytest.raises(ValueError, match=None) as e:
        pg.run(history, settings)
    assert message in str(e.value)

"""Dialogue and playground on vLLM: a reply's SID span ranked on the engine (the processor's
per-request ``recllm_stop``) gives the same items and scores as transformers; chat turns and the
playground's modes run on the engine. vLLM runs in a child process (see tests/test_vllm_smoke.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recllm.apps.chat import ChatSession
from recllm.apps.recommender import Recommender
from recllm.tasks.dialogue import DialogueTurn, Steer, dialogue_prompt, reply_stop_token
from recllm.tasks.prompting import task_builder
from recllm.testing import save_tiny_recommender
from tests.serving import VLLM_INPROCESS_ENV, run_vllm_child

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("torch_single_thread")]

VLLM_ENV = VLLM_INPROCESS_ENV

_CHILD = """
import json, sys
from recllm.apps.chat import ChatSession
from recllm.apps.playground import DecodeSettings, Playground
from recllm.apps.recommender import Recommender

job = json.loads(open(sys.argv[1]).read())
rec = Recommender.from_pretrained(job["model_dir"], engine="vllm",
                                  vllm_kwargs={"max_model_len": 1024})
res = {}
ranked = rec.recommend_prompts(job["prompts"], 5, num_beams=job["beams"],
                               stop_token_id=job["stop"])
res["dialogue"] = [[[r.item_id, r.score] for r in row] for row in ranked]
chat = ChatSession(rec, job["history"], k=4)
reply = chat.ask("Something with genre Horror?")
res["chat"] = {"picks": [p.item_id for p in reply.picks], "reply": reply.reply,
               "spans": [[s.match, s.item_id, s.text] for s in reply.spans]}
pg = Playground(rec, {})
hist = ", ".join(job["history"])
beam = pg.run(hist, DecodeSettings(k=5, beams=8))
sample = pg.run(hist, DecodeSettings(k=6, mode="sample", temperature=1.0))
free = pg.run(hist, DecodeSettings(k=6, mode="sample", temperature=1.0, constrained=False))
res["playground"] = {
    "beam": [r.item_id for r in beam.items],
    "sample": [r.item_id for r in sample.items],
    "free_invalid": free.invalid,
    "raw_spans": [s.match for s in beam.spans],
}
try:
    pg.run(hist, DecodeSettings(constrained=False))
    res["unconstrained_beam"] = "ran"
except ValueError as e:
    res["unconstrained_beam"] = str(e)
print("RESULT " + json.dumps(res))
"""


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    model_dir = save_tiny_recommender(tmp_path_factory.mktemp("dv") / "tiny", dialogue=True)
    return Recommender.from_pretrained(model_dir, engine="hf")


def test_dialogue_chat_and_playground_on_vllm(talk: Recommender, tmp_path: Path):
    builder = task_builder(talk.spec, talk.sid_map, talk.catalog)
    histories = [["item3", "item7"], ["item10", "item11", "item12"], ["item40"]]
    prompts = [
        dialogue_prompt(builder, histories[0]),
        dialogue_prompt(
            builder,
            histories[1],
            request=DialogueTurn("open", "", steer=Steer("genre", "genre", "Horror")),
        ),
        dialogue_prompt(
            builder, histories[2], request=DialogueTurn("open", "", text="anything funny?")
        ),
    ]
    stop = reply_stop_token(talk.tokenizer)
    beams = 12
    job = {
        "model_dir": str(talk.model_dir),
        "prompts": prompts,
        "stop": stop,
        "beams": beams,
        "history": histories[0],
    }
    res = run_vllm_child(_CHILD, job, tmp_path, VLLM_ENV)

    # the reply span ranked on vLLM (recllm_stop = the new line) == transformers, scores too
    hf = talk.recommend_prompts(prompts, 5, num_beams=beams, stop_token_id=stop)
    for got, want in zip(res["dialogue"], hf, strict=True):
        assert [i for i, _ in got] == [r.item_id for r in want]
        assert all(abs(s - r.score) < 1e-4 for (_, s), r in zip(got, want, strict=True))
    # control: scored with the EOS token instead (what the engine would force without
    # recllm_stop), the scores are far from vLLM's, which match the new line's
    eos = talk.recommend_prompts(prompts, 5, num_beams=beams)
    gaps = [
        abs(s - r.score)
        for got, row in zip(res["dialogue"], eos, strict=True)
        for (i, s), r in zip(got, row, strict=True)
        if i == r.item_id
    ]
    assert gaps and min(gaps) > 1e-2, gaps

    # a chat turn on vLLM: same picks as transformers, the reply opens with the top pick
    hf_reply = ChatSession(talk, histories[0], k=4).ask("Something with genre Horror?")
    chat = res["chat"]
    assert chat["picks"] == [p.item_id for p in hf_reply.picks]
    assert chat["spans"][0][:2] == ["exact", chat["picks"][0]]
    # every span the reply opened is a catalog SID (on vLLM, stray code tokens outside spans
    # are not masked; resolve_spans labels them)
    opened = [m for m, _, text in chat["spans"] if text.startswith("<|sid_begin|>")]
    assert opened and all(m == "exact" for m in opened), chat["spans"]

    pg = res["playground"]
    assert len(pg["beam"]) == 5 and None not in pg["beam"]
    assert pg["sample"] and None not in pg["sample"]  # constrained samples: catalog items
    assert pg["free_invalid"] > 0  # control: unconstrained samples of a random model are not
    assert "runs on engine hf" in res["unconstrained_beam"]

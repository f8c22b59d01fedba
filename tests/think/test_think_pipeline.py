"""OneRec-Think end to end on tiny Qwen3 models and ml-100k: rationales -> recipes/onerec_think.py
through `accelerate launch` -> think-then-SID decoding -> think-ahead -> prefix-restricted eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recllm.cli import main as cli
from recllm.data.splits import Example
from recllm.decode import DecodeOptions, SIDTrie, generate_sids
from recllm.decode.prefixes import read_prefix_file
from recllm.decode.think import sid_prompt_texts, think_prefix_texts, think_then_sid
from recllm.eval.run import eval_examples
from recllm.sid.sidmap import SIDMap
from recllm.tasks.prompting import PromptSpec, build_prompts
from recllm.tasks.reasoning import load_rationales
from recllm.testing import save_tiny_model
from recllm.vocab import SID_FORMAT, load_model_with_sids

pytestmark = pytest.mark.usefixtures("torch_single_thread")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _data(shared_data_or_none) -> str:
    return str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"


def _think_yaml(tmp: Path, **changes) -> Path:
    cfg = yaml.safe_load((ROOT / "recipes" / "onerec_think.yaml").read_text())
    mixture = changes.pop("mixture", {})
    defaults = dict(
        max_users=30,
        codebook_size=16,
        train_top_layers=None,
        max_steps=40,
        learning_rate=3e-3,
        warmup_steps=0,
        per_device_train_batch_size=8,
        logging_steps=1,
    )
    cfg.update({**defaults, **changes})
    cfg["mixture"].update({"rec": 0.0, "rec_sequence": 1.0, "reason_rec": 3.0, **mixture})
    path = tmp / f"think_{len(list(tmp.glob('think_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _launch(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--quiet", "--cpu", "--num_processes", "1"]
    cmd += [str(ROOT / "recipes" / "onerec_think.py"), "--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=900)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, shared_data_or_none):
    """An aligned start model (a 1-step PLUM run), its rationales, and a think model trained
    from it through `accelerate launch`."""
    tmp = tmp_path_factory.mktemp("think")
    data = _data(shared_data_or_none)
    base = save_tiny_model(tmp / "base", tie_word_embeddings=False)
    plum = [sys.executable, str(ROOT / "recipes" / "plum_sft.py")]
    plum += ["--config", str(ROOT / "recipes" / "plum_sft.yaml"), "--model_name_or_path", str(base)]
    plum += ["--data_path", data, "--max_users", "30", "--codebook_size", "16"]
    plum += ["--warmup_steps_embed", "0", "--max_steps", "1", "--output_dir", str(tmp / "start")]
    proc = subprocess.run(plum, capture_output=True, text=True, cwd=tmp, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    start = tmp / "start" / "model"
    assert cli(["reason", "generate", "--model-dir", str(start), "--out", str(tmp / "rat")]) == 0
    config = _think_yaml(
        tmp,
        model_name_or_path=str(start),
        rationales=str(tmp / "rat"),
        data_path=data,
        output_dir=str(tmp / "run"),
    )
    proc = _launch(config, tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"tmp": tmp, "data": data, "start": start, "model": tmp / "run" / "model"}


def _rationale_nll(model_dir: Path, rows, think_model_dir: Path) -> float:
    """Mean NLL per token of the rationale text (inside <think>) of ``rows``, prompts built
    from the think model's templates, under the model in ``model_dir``."""
    model, tok, sid_map = load_model_with_sids(model_dir)
    spec = PromptSpec.from_model_dir(think_model_dir)
    _, dataset, _ = eval_examples(think_model_dir, None, "test", 1)
    examples = [Example(r["user_id"], tuple(r["history"][-20:]), r["target"]) for r in rows]
    prompts = build_prompts(spec, examples, sid_map, dataset.catalog, think=True)
    heads = think_prefix_texts(tok, prompts)
    total, count = 0.0, 0
    for head, row in zip(heads, rows, strict=True):
        h = tok(head, add_special_tokens=False)["input_ids"]
        r = tok(row["rationale"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([h + r])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        positions = range(len(h), len(h) + len(r))
        total -= sum(float(logp[p - 1, ids[0, p]]) for p in positions)
        count += len(r)
    return total / count


def test_recipe_from_an_aligned_model_learns_the_rationales(pipeline):
    start, think = pipeline["start"], pipeline["model"]
    _, tok0, map0 = load_model_with_sids(start)
    _model, tok, sid_map = load_model_with_sids(think)
    # the start model's SIDs and vocabulary are reused, not rebuilt
    assert sid_map.content_hash == map0.content_hash and len(tok) == len(tok0)
    spec = PromptSpec.from_model_dir(think)
    assert spec.think["task"] == "reason_rec" and spec.think["rationale_source"] == "metadata"
    assert (think / "prompts" / "reason_rec.jinja").is_file()
    log = json.loads((think.parent / "train_log.json").read_text())
    assert "warmup" not in log  # no embedding-only warm-up from an aligned model
    # the loss covered the rationales: their NLL fell by more than a fifth (a run that sees
    # ~4 rationale rows in 30 steps leaves it where it was: 6.36 -> 6.36)
    rows = list(load_rationales(pipeline["tmp"] / "rat")[0])[:8]
    before = _rationale_nll(start, rows, think)
    after = _rationale_nll(think, rows, think)
    assert after < 0.8 * before, (before, after)


def test_recipe_refuses_rationales_of_other_data(pipeline, tmp_path):
    other = tmp_path / "rat20"
    cmd = ["reason", "generate", "--data", pipeline["data"], "--max-users", "20"]
    assert cli([*cmd, "--out", str(other)]) == 0
    config = _think_yaml(
        tmp_path,
        model_name_or_path=str(pipeline["start"]),
        rationales=str(other),
        data_path=pipeline["data"],
        output_dir=str(tmp_path / "out"),
    )
    from recllm.errors import UserError
    from recllm.train.think import parse_recipe_args, run_think

    # in-process (the one-line printing of a UserError is the recipes' shared user_errors)
    with pytest.raises(UserError) as e:
        run_think(*parse_recipe_args(["--config", str(config)]))
    assert str(e.value).startswith(f"--rationales {other}: was made from other data than this")
    assert "Fix: " in str(e.value) and not (tmp_path / "out").exists()


def _think_setup(pipeline, n: int = 30):
    model, tok, sid_map = load_model_with_sids(pipeline["model"])
    model.eval()
    spec = PromptSpec.from_model_dir(pipeline["model"])
    _, dataset, examples = eval_examples(pipeline["model"], None, "test", n)
    prompts = build_prompts(spec, examples, sid_map, dataset.catalog, think=True)
    return model, tok, sid_map, prompts


def test_think_then_sid_answers_are_catalog_items_and_unconstrained_ones_are_not(pipeline):
    """Many sampled rationales (hot sampling: long, odd texts), each followed by a constrained
    SID beam: every answer is a catalog item. Control: the same SID prompts decoded without
    the trie name non-catalog SIDs or malformed answers."""
    model, tok, sid_map, prompts = _think_setup(pipeline)
    results = think_then_sid(
        model, tok, prompts, sid_map, k=5, num_beams=5, rationales=4, temperature=1.5,
        max_think_tokens=40, batch_size=8, seed=1,
    )  # fmt: skip
    items = [item for res in results for path in res.paths for item, _ in path]
    assert len(items) == 30 * 4 * 5 and all(i in sid_map for i in items)
    assert all(len(res.recommendations) == 5 for res in results)
    assert len({t for res in results for t in res.rationales}) > 30  # sampled, not one text
    # control: the trie off after the same rationales
    flat = [p for p in prompts for _ in range(4)]
    texts = [t for res in results for t in res.rationales]
    begin = tok.convert_ids_to_tokens(SID_FORMAT.token_ids(tok, sid_map.codebook_sizes).begin_id)
    sid_prompts = sid_prompt_texts(tok, flat, texts, begin)
    free = generate_sids(
        model, tok, sid_prompts[:40], sid_map, DecodeOptions(k=5, constrained=False, batch_size=8)
    )
    invalid = sum(r.item_id is None for row in free for r in row)
    assert invalid > 0, "control: unconstrained decoding should name non-catalog SIDs"


def test_think_text_is_left_unconstrained(pipeline):
    """The rationale is sampled exactly as without the SID processor, token for token, up to
    the first SID span the model opens (inside a span the processor keeps it a catalog SID)."""
    from transformers import GenerationConfig

    from recllm.decode.generate import left_pad
    from recllm.decode.think import _hf_think

    model, tok, sid_map, prompts = _think_setup(pipeline, 8)
    trie = SIDTrie.from_sid_map(sid_map, SID_FORMAT.token_ids(tok, sid_map.codebook_sizes))
    heads = think_prefix_texts(tok, prompts)
    ours = _hf_think(
        model, tok, heads, trie, rationales=1, max_think_tokens=24, temperature=1.0, top_p=1.0,
        batch_size=8, seed=3, progress=False,
    )  # fmt: skip
    encoded = [tok(h, add_special_tokens=False)["input_ids"] for h in heads]
    ids, mask = left_pad(encoded, tok.pad_token_id, model.device)
    cfg = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=24,
        stop_strings=["</think>"], eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(3)
    plain = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, tokenizer=tok)
    plain_texts = tok.batch_decode(plain[:, ids.shape[1] :], skip_special_tokens=False)
    compared = 0
    for [(text, _)], other in zip(ours, plain_texts, strict=True):
        cut = other.find("<|sid_begin|>")
        head = other if cut < 0 else other[:cut]
        head = head.split("</think>")[0].split(tok.pad_token)[0].strip()
        assert text.startswith(head[: len(text)]) or head.startswith(text), (text, head)
        compared += len(head) > 0
    assert compared >= 4


def test_cli_think_eval_think_ahead_and_prefix_restricted_eval(pipeline, tmp_path):
    model = pipeline["model"]
    out = tmp_path / "think_eval"
    args = ["eval", "--model", str(model), "--think", "--rationales", "2"]
    args += ["--think-temperature", "1.0", "--think-tokens", "32", "--beams", "10"]
    assert cli([*args, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["invalid_rate"] == 0 and m["think"]["rationales"] == 2 and m["users"] == 30
    lines = (out / "rationales.jsonl").read_text().splitlines()
    assert len(lines) == 30 and len(json.loads(lines[0])["rationales"]) == 2

    prefixes = tmp_path / "pre.parquet"
    args = ["think-ahead", "--model", str(model), "--paths", "3", "--prefixes", "3"]
    args += ["--think-tokens", "24", "--engine", "hf", "--out", str(prefixes)]
    assert cli(args) == 0
    sets, record = read_prefix_file(prefixes)
    assert len(sets) == 30 and record["depth"] == 2 and record["paths"] == 3
    # the file records its split and data (issue 29): on the valid split it is refused
    assert record["split"] == "test" and record["data_fingerprint"]["users"] == 30
    args = ["eval", "--model", str(model), "--prefixes", str(prefixes), "--split", "valid"]
    assert cli([*args, "--beams", "10", "--out", str(tmp_path / "leak")]) == 2
    assert not (tmp_path / "leak").exists()
    assert all(1 <= len(s) <= 9 and all(len(p) == 2 for p in s) for s in sets.values())

    preds = tmp_path / "pred.jsonl"
    args = ["eval", "--model", str(model), "--prefixes", str(prefixes), "--beams", "10"]
    assert cli([*args, "--predictions", str(preds), "--out", str(tmp_path / "pe")]) == 0
    sid_map = SIDMap.load(model)
    for line in preds.read_text().splitlines():
        row = json.loads(line)
        allowed = set(sets[row["user"]])
        assert row["items"] and all(sid_map.code(i)[:2] in allowed for i in row["items"])
    m = json.loads((tmp_path / "pe" / "metrics.json").read_text())["metrics"]
    assert m["prefix_recall"] == record["prefix_recall"] and m["prefix_users"] == 30
    # a prefix file of another SID map is refused
    other = SIDMap(sid_map.item_ids, sid_map.codes[::-1].copy(), sid_map.codebook_sizes)
    with pytest.raises(ValueError, match="another SID map"):
        read_prefix_file(prefixes, other.content_hash)


def test_recipe_from_a_base_moe_model_runs_the_alignment_stage_itself(tmp_path, pipeline):
    base = save_tiny_model(tmp_path / "moe", moe=True, tie_word_embeddings=False)
    config = _think_yaml(
        tmp_path,
        model_name_or_path=str(base),
        rationales=str(pipeline["tmp"] / "rat"),
        data_path=pipeline["data"],
        output_dir=str(tmp_path / "run"),
        max_steps=8,
        warmup_steps_embed=2,
        mixture={"catalog_title_to_sid": 0.5},
    )
    proc = _launch(config, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    model, _tok, _sid_map = load_model_with_sids(tmp_path / "run" / "model")
    assert model.config.model_type == "qwen3_moe" and (tmp_path / "run" / "sids").is_dir()
    assert PromptSpec.from_model_dir(tmp_path / "run" / "model").think["task"] == "reason_rec"
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert len([h for h in log["warmup"] if "loss" in h]) == 2  # the alignment stages ran
    before = type(model).from_pretrained(base).state_dict()
    now = model.state_dict()
    experts = [n for n in before if ".experts." in n]
    assert experts and any(not torch.equal(before[n], now[n]) for n in experts)


_VLLM_CHILD = """
import json, sys
from recllm.decode.think import think_then_sid
from recllm.decode.vllm_beam import start_vllm_engine, vllm_sid_beam_search, vllm_sid_prefix_search
from recllm.decode.vllm_processor import load_sid_trie
from recllm.vocab.checkpoint import load_tokenizer_with_sids
from vllm import SamplingParams, TokensPrompt

job = json.loads(open(sys.argv[1]).read())
tok, sid_map = load_tokenizer_with_sids(job["model"])
llm = start_vllm_engine(job["model"], stop_token_id=tok.eos_token_id, dtype="float32", max_k=20,
                        vllm_kwargs={"max_model_len": 1024, "seed": 0})
trie = load_sid_trie(job["model"])
res = {}
think = think_then_sid(None, tok, job["chat"], sid_map, k=5, num_beams=5, rationales=3,
                       temperature=1.5, max_think_tokens=32, engine=llm)
res["think"] = [[[i for i, _ in p] for p in r.paths] for r in think]
res["texts"] = [r.rationales for r in think]
res["restricted"] = vllm_sid_beam_search(llm, job["ids"], trie, num_beams=6, k=6,
                                         prefixes=job["prefixes"])
res["prefix_search"] = vllm_sid_prefix_search(llm, job["ids"], trie, num_beams=5, depth=2)
from recllm.decode.think import think_ahead_prefixes
res["ahead"] = think_ahead_prefixes(None, tok, job["chat"], sid_map, paths=2, prefixes=3,
                                    max_think_tokens=24, engine=llm)
# users in engine calls of batch_size (a vLLM batch must fit its KV cache): greedy answers
# are the same in 3 calls of 5 users as in one call of 12
whole, parts = (
    think_then_sid(None, tok, job["chat"], sid_map, k=5, rationales=1, temperature=0.0,
                   max_think_tokens=24, batch_size=b, engine=llm)
    for b in (100, 5)
)
res["chunked_same"] = [(r.rationales, [x.item_id for x in r.recommendations]) for r in whole] == [
    (r.rationales, [x.item_id for x in r.recommendations]) for r in parts]
ahead = [think_ahead_prefixes(None, tok, job["chat"], sid_map, paths=1, prefixes=3,
                              temperature=0.0, max_think_tokens=24, batch_size=b, engine=llm)
         for b in (100, 5)]
res["ahead_chunked_same"] = ahead[0] == ahead[1]
free = SamplingParams(temperature=1.0, max_tokens=5, extra_args={"recllm_sid": False})
outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in job["begun"]], free, use_tqdm=False)
res["free"] = [list(o.outputs[0].token_ids) for o in outs]
print("RESULT " + json.dumps(res))
"""


@pytest.mark.vllm
def test_think_and_think_ahead_on_vllm_match_transformers(pipeline, tmp_path):
    """On vLLM with recllm's processor: thinking answers are catalog items (control: the same
    SID positions left unconstrained name non-catalog SIDs); prefix-restricted beams and the
    think-ahead prefix search equal recllm's transformers beam search."""
    from recllm.decode import sid_beam_search
    from recllm.decode.generate import encode_prompts, left_pad
    from recllm.decode.prefixes import PrefixSets

    model, tok, sid_map, chat = _think_setup(pipeline, 12)
    trie = SIDTrie.from_sid_map(sid_map, SID_FORMAT.token_ids(tok, sid_map.codebook_sizes))
    ids = encode_prompts(tok, chat)
    pre = sorted({tuple(int(c) for c in code[:2]) for code in sid_map.codes})
    prefixes = [[list(p) for p in pre[n::7]] if n % 3 else None for n in range(len(ids))]
    begin = trie.token_ids.begin_id
    job = {
        "model": str(pipeline["model"]),
        "chat": chat,
        "ids": ids,
        "prefixes": prefixes,
        "begun": [[*p, begin] for p in ids],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {
        **ENV,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _VLLM_CHILD, str(tmp_path / "job.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-5000:]
    got = json.loads(lines[-1].removeprefix("RESULT "))

    items = [i for user in got["think"] for path in user for i in path]
    assert len(items) == 12 * 3 * 5 and all(i in sid_map for i in items)
    assert len({t for user in got["texts"] for t in user}) > 12  # sampled rationales
    # control: the SID left free after the begin marker is mostly no catalog item
    codes = [trie.token_ids.decode([begin, *t[:4]]) for t in got["free"]]
    valid = [c is not None and sid_map.item(c) is not None for c in codes]
    assert sum(valid) < len(valid)

    x, mask = left_pad(ids, tok.pad_token_id, model.device)
    sets = PrefixSets.from_prefixes(trie, [None if p is None else p for p in prefixes])
    ours = sid_beam_search(
        model, x, mask, trie, num_beams=6, stop_token_id=tok.eos_token_id, prefixes=sets
    )
    for n, row in enumerate(got["restricted"]):
        assert [r for r, _ in row] == ours.items[n].tolist()
        assert max(abs(s - float(o)) for (_, s), o in zip(row, ours.scores[n], strict=True)) < 1e-3
        if prefixes[n] is not None:
            allowed = {tuple(p) for p in prefixes[n]}
            assert all(tuple(int(c) for c in sid_map.codes[r][:2]) in allowed for r, _ in row)
    assert got["chunked_same"] and got["ahead_chunked_same"]
    # think-ahead on vLLM: per user a union of 2-level catalog prefixes, at most 2 x 3
    catalog = {tuple(int(c) for c in code[:2]) for code in sid_map.codes}
    assert len(got["ahead"]) == 12
    assert all(1 <= len(s) <= 6 and {tuple(p) for p in s} <= catalog for s in got["ahead"])
    depth = sid_beam_search(model, x, mask, trie, num_beams=5, depth=2)
    for n, row in enumerate(got["prefix_search"]):
        assert [tuple(c) for c, _ in row] == [tuple(c) for c in depth.codes[n].tolist()]
        assert max(abs(s - float(o)) for (_, s), o in zip(row, depth.scores[n], strict=True)) < 1e-3


@pytest.mark.vllm
def test_served_think_model_recommends_with_rationales_and_chat_sids_are_catalog_sids(
    pipeline, tmp_path
):
    """`recllm serve` of the think model: /v1/recommend with "think" returns catalog items and
    the rationale, the items transformers gives after the same rationale; chat answers to the
    reasoning prompt carry free think text whose SID spans are all catalog SIDs (control: with
    the constraint switched off per request, some are not)."""
    import re

    from tests.serving import post, served

    model, tok, sid_map, chat = _think_setup(pipeline, 10)
    _, dataset, examples = eval_examples(pipeline["model"], None, "test", 10)
    whole = re.compile(r"<a_(\d+)><b_(\d+)><c_(\d+)><\|sid_end\|>")

    def spans(text: str, cut: bool) -> list[bool]:
        """Per SID span the answer opens: whether it is exactly three level codes of a catalog
        item and the end marker (a last span the token limit cut short is not counted)."""
        out = []
        parts = text.split("<|sid_begin|>")[1:]
        for n, part in enumerate(parts):
            m = whole.match(part)
            if m is None and cut and n == len(parts) - 1 and "<|" not in part:
                continue
            out.append(m is not None and sid_map.item(tuple(map(int, m.groups()))) is not None)
        return out

    with served(pipeline["model"], tmp_path / "serve.log") as base:
        agree = 0
        for ex in examples[:6]:
            body = {"history": list(ex.history), "k": 5, "think": True}
            status, got = post(base + "/v1/recommend", body)
            assert status == 200, got
            assert len(got["items"]) == 5 and all(i["item_id"] in sid_map for i in got["items"])
            assert len(got["rationales"]) == 1
            [ours] = think_then_sid(
                model, tok, build_prompts(PromptSpec.from_model_dir(pipeline["model"]),
                                          [ex], sid_map, dataset.catalog, think=True),
                sid_map, k=5, num_beams=5, rationales=1, temperature=0.0, max_think_tokens=256,
            )  # fmt: skip
            if ours.rationales == got["rationales"]:  # same thought -> the same items
                assert [r.item_id for r in ours.recommendations] == [
                    i["item_id"] for i in got["items"]
                ]
                agree += 1
        assert agree >= 3
        status, bad = post(base + "/v1/recommend", {"history": ["1"], "think": "yes"})
        assert status == 400 and "think: must be true or false" in bad["error"]["message"]

        on, off = [], []
        for messages in chat:
            for flags, found in (({}, on), ({"vllm_xargs": {"recllm_sid": False}}, off)):
                body = {
                    "model": str(pipeline["model"]),
                    "messages": messages,
                    "max_tokens": 96,
                    "temperature": 1.0,
                    "skip_special_tokens": False,
                    **flags,
                }
                status, got = post(base + "/v1/chat/completions", body)
                assert status == 200, got
                choice = got["choices"][0]
                found += spans(choice["message"]["content"], choice["finish_reason"] == "length")
        assert on and all(on), on  # every SID the served model writes is a catalog SID
        assert off and not all(off), off  # control: unconstrained, some are not


def test_playground_and_chat_think_with_a_reasoning_model(pipeline):
    """The playground's "think first" and the chat's /think on, on the trained think model:
    rationales shown, every pick a catalog item, the raw text holds the <think> block."""
    from recllm.apps.chat import ChatSession
    from recllm.apps.playground import DecodeSettings, Playground
    from recllm.apps.recommender import Recommender

    rec = Recommender.from_pretrained(pipeline["model"], engine="hf")
    pg = Playground.from_pretrained(pipeline["model"])
    history = next(iter(pg.users.values()))
    res = pg.run(", ".join(history), DecodeSettings(k=5, beams=5, think=True))
    assert len(res.rationales) == 1 and res.rationales[0]
    assert res.raw.startswith("<think>\n") and len(res.items) == 5
    assert all(r.item_id in rec.sid_map for r in res.items)
    with pytest.raises(ValueError, match="Fix: beam mode with the SID constraint on"):
        pg.run(", ".join(history), DecodeSettings(think=True, constrained=False))
    chat = ChatSession(rec, history, k=3, think=True)
    reply = chat.ask("anything")
    assert reply.mode == "think" and reply.rationales and len(reply.picks) == 3
    assert not set(p.item_id for p in reply.picks) & set(history)

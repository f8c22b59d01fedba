"""scripts/paired.py: two predictions files compared user by user, against targets the split
gives, with hand-counted figures and clear errors for files that do not fit."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.scripts.running import ROOT, run_script


def _dataset(d):
    """30 users with 6 items each; leave-one-out: the test target is the 6th item."""
    d.mkdir()
    items = [f"i{k}" for k in range(40)]
    (d / "items.csv").write_text("item_id,title\n" + "".join(f"{i},film {i}\n" for i in items))
    rows = ["user_id,item_id,timestamp"]
    for u in range(30):
        for t in range(6):
            rows.append(f"u{u},i{(u + 3 * t) % 40},{t}")
    (d / "interactions.csv").write_text("\n".join(rows) + "\n")
    return {f"u{u}": f"i{(u + 15) % 40}" for u in range(30)}  # the targets


def _write(path, lists):
    path.write_text("".join(json.dumps({"user": u, "items": it}) + "\n" for u, it in lists.items()))
    return str(path)


def test_paired_counts_by_hand(tmp_path):
    targets = _dataset(tmp_path / "data")
    filler = [f"i{k}" for k in range(30, 39)]
    # base: the target first for users 0-9, absent elsewhere; other: first for 0-19, and at
    # rank 3 for user 20
    base = {
        u: ([t] if int(u[1:]) < 10 else []) + [x for x in filler if x != t]
        for u, t in targets.items()
    }
    other = {}
    for u, t in targets.items():
        rest = [x for x in filler if x != t]
        k = int(u[1:])
        other[u] = [t, *rest] if k < 20 else ([*rest[:2], t, *rest[2:]] if k == 20 else rest)
    a, b = _write(tmp_path / "a.jsonl", base), _write(tmp_path / "b.jsonl", other)
    data = str(tmp_path / "data")
    proc, s = run_script(
        "paired.py", a, b, "--data", data, "--names", "base", "other", cwd=tmp_path
    )
    assert s["users"] == 30
    assert s["rows"]["base"]["R@10"] == round(10 / 30, 5)
    assert s["rows"]["other"]["R@10"] == round(21 / 30, 5)
    assert s["rows"]["other"]["N@10"] == round((20 + 1 / math.log2(4)) / 30, 5)
    c = s["paired_vs_base"]["other"]
    assert c["R@10"]["delta"] == round(11 / 30, 5)
    assert c["users_gained"] == 11 and c["users_lost"] == 0
    assert c["R@10"]["ci95"][0] > 0 and c["R@10"]["p"] < 0.01
    assert "paired differences from base" in proc.stdout
    # control: a file compared with itself moves nothing
    _, same = run_script("paired.py", a, a, "--data", data, "--names", "a", "a2", cwd=tmp_path)
    assert same["paired_vs_base"]["a2"]["R@10"]["delta"] == 0.0


def test_paired_errors_name_the_file(tmp_path):
    targets = _dataset(tmp_path / "data")
    a = _write(tmp_path / "a.jsonl", {u: [t] for u, t in targets.items()})
    fewer = _write(tmp_path / "b.jsonl", {u: [t] for u, t in list(targets.items())[:20]})
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"user": "u0", "items": ["i1"]}\nnot json\n')

    def run(*args):
        return subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "paired.py"),
                *args,
                "--data",
                str(tmp_path / "data"),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    p = run(a, fewer)
    assert p.returncode == 2 and "b.jsonl: ranks 20 users" in p.stderr and "Fix:" in p.stderr
    p = run(a, str(bad))
    assert p.returncode == 2 and "c.jsonl:2: not a" in p.stderr
    p = run(a, a)
    assert p.returncode == 2 and "repeat: give each file its own with --names" in p.stderr


def test_paired_adds_a_sasrec_row(tmp_path):
    """--sasrec ranks the same users with a saved SASRec; its row equals the figures of its own
    full ranking, computed here directly."""
    from recllm.baselines.sasrec import SASRecConfig, split_sasrec
    from recllm.bench.distill import sasrec_lists
    from recllm.data import DataConfig, load_rec_dataset, split_dataset

    targets = _dataset(tmp_path / "data")
    cfg = DataConfig(data_path=str(tmp_path / "data"))
    ds = load_rec_dataset(config=cfg)
    split = split_dataset(ds, cfg)
    model = split_sasrec(
        tmp_path / "teacher", split, ds.catalog, SASRecConfig(epochs=3, hidden_size=16), "--t"
    )
    lists = sasrec_lists(model, split.test, top=10)
    hits = sum(ex.target in items for ex, items in zip(split.test, lists, strict=True))
    assert 0 < hits < 30  # a row that can differ from the base and from a perfect ranking
    a = _write(tmp_path / "a.jsonl", {u: [] for u in targets})  # ranks nothing: R@10 0
    _, s = run_script(
        "paired.py",
        a,
        "--data",
        cfg.data_path,
        "--sasrec",
        str(tmp_path / "teacher"),
        cwd=tmp_path,
    )
    row = s["rows"][f"SASRec {tmp_path.name}/teacher"]
    assert row["R@10"] == round(hits / 30, 5)
    assert s["paired_vs_base"][f"SASRec {tmp_path.name}/teacher"]["users_gained"] == hits


def test_paired_by_popularity_groups_users_by_their_targets_training_count(tmp_path):
    """--by-popularity: each user falls in the group of its target's count in the training part
    (here counted from how the data was generated, not from the split), and each group's R@10 is
    its own users' hits; the groups partition the users and their hits."""
    targets = _dataset(tmp_path / "data")
    # training part (leave-one-out): items t = 0..3 of every user, i.e. i{(u + 3t) % 40}
    count = {}
    for u in range(30):
        for t in range(4):
            count[f"i{(u + 3 * t) % 40}"] = count.get(f"i{(u + 3 * t) % 40}", 0) + 1
    # the target first for users 0-14, absent for the others
    lists = {u: [t] if int(u[1:]) < 15 else [] for u, t in targets.items()}
    a = _write(tmp_path / "a.jsonl", lists)
    b = _write(tmp_path / "b.jsonl", {u: [] for u in targets})
    _, s = run_script(
        "paired.py",
        *(a, b, "--data", str(tmp_path / "data"), "--by-popularity"),
        *("--plot", str(tmp_path / "pop.png")),
        cwd=tmp_path,
    )
    assert (tmp_path / "pop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    groups = s["by_popularity"]
    assert [g["bucket"] for g in groups] == ["0", "1-4", "5-19", "20-99", "100+"]
    expected = {}
    for u, t in targets.items():
        n = count.get(t, 0)
        label = "0" if n == 0 else "1-4" if n < 5 else "5-19" if n < 20 else "20-99"
        users, hits = expected.get(label, (0, 0))
        expected[label] = (users + 1, hits + (int(u[1:]) < 15))
    assert len(expected) >= 2  # the data spreads over two groups at least
    for g in groups:
        users, hits = expected.get(g["bucket"], (0, 0))
        assert g["users"] == users
        assert g["R@10"]["a"] == (round(hits / users, 5) if users else None)
        assert g["R@10"]["b"] == (0.0 if users else None)
    assert sum(g["users"] for g in groups) == 30
    assert abs(sum(g["hit_share"]["a"] or 0 for g in groups) - 1.0) < 1e-3

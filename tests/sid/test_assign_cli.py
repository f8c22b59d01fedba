"""``recllm sid assign`` through the CLI's main(): new items get codes from a build's frozen
quantizer; an artifact without quantizer/ gets the rebuild command, and that rebuild reproduces
the map (same content hash)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from recllm.cli import main
from recllm.sid.sidmap import SIDMap

WORDS = ["red", "blue", "steel", "wood", "drill", "saw", "tape", "glue", "lamp", "cable"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("lc")
    items = {
        str(i): {"title": " ".join(rng.choice(WORDS, 3)) + f" model {i % 7}", "brand": f"b{i % 5}"}
        for i in range(120)
    }
    inter = {str(u): [int(x) for x in rng.choice(120, size=6, replace=False)] for u in range(150)}
    (d / "Toy.item.json").write_text(json.dumps(items))
    (d / "Toy.inter.json").write_text(json.dumps(inter))
    out = d / "sids"
    argv = ["sid", "build", "--data", str(d), "--levels", "2", "--codebook-size", "16"]
    assert main([*argv, "--text-dim", "16", "--no-cache", "--out", str(out)]) == 0
    return d, out


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("recllm: error: ")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def test_assign_writes_a_new_artifact(built, tmp_path, capsys):
    _, sids = built
    items = tmp_path / "new.jsonl"
    rows = [{"item_id": f"n{k}", "title": f"{WORDS[k]} lamp pro", "brand": "b1"} for k in range(9)]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sids2"
    assert (
        main(["sid", "assign", "--sids", str(sids), "--items", str(items), "--out", str(out)]) == 0
    )
    assert "9 new items added to 120" in capsys.readouterr().out
    old, new = SIDMap.load(sids), SIDMap.load(out)
    assert new.item_ids == old.item_ids + [f"n{k}" for k in range(9)]
    np.testing.assert_array_equal(new.codes[:120], old.codes)
    report = json.loads((out / "assign_report.json").read_text())
    assert report["new_items"] == 9 and report["parent_content_hash"] == old.content_hash
    assert report["content_hash"] == new.content_hash
    assert json.loads((out / "metrics.json").read_text())["items"] == 129
    for name in ("quantizer.json", "arrays.safetensors"):
        assert (out / "quantizer" / name).read_bytes() == (sids / "quantizer" / name).read_bytes()
    # chained: the new artifact takes further items
    more = tmp_path / "more.csv"
    more.write_text("item_id,title\nm1,red saw\n")
    assert (
        main(
            [
                "sid",
                "assign",
                "--sids",
                str(out),
                "--items",
                str(more),
                "--out",
                str(tmp_path / "s3"),
            ]
        )
        == 0
    )
    # an id already in the catalog is refused, and the message says so
    dup = tmp_path / "dup.csv"
    dup.write_text("item_id,title\n5,red saw\n")
    code = main(
        ["sid", "assign", "--sids", str(sids), "--items", str(dup), "--out", str(tmp_path / "x")]
    )
    assert code == 2 and "refused, not updated: existing items never move" in _error(capsys)
    # a file without the build's text fields
    notext = tmp_path / "notext.csv"
    notext.write_text("item_id,colour\nq1,red\n")
    code = main(
        ["sid", "assign", "--sids", str(sids), "--items", str(notext), "--out", str(tmp_path / "y")]
    )
    assert code == 2 and "no text in the fields the SIDs were built from" in _error(capsys)


def test_artifact_without_quantizer_gets_the_rebuild_command(built, tmp_path, capsys):
    data, sids = built
    old = tmp_path / "old"
    shutil.copytree(sids, old)
    shutil.rmtree(old / "quantizer")  # as built before this change
    items = tmp_path / "new.csv"
    items.write_text("item_id,title\nn1,red saw\n")
    code = main(
        ["sid", "assign", "--sids", str(old), "--items", str(items), "--out", str(tmp_path / "o")]
    )
    msg = _error(capsys)
    assert code == 2 and "no quantizer/" in msg and f"recllm sid build --data {data}" in msg
    # the suggested command rebuilds the same codes
    cmd = msg.split("`")[1].split()
    assert cmd[:4] == ["recllm", "sid", "build", "--data"]
    rebuilt = tmp_path / "rebuilt"
    args = [*cmd[1:-2], "--no-cache", "--out", str(rebuilt)]
    assert main(args) == 0
    assert SIDMap.load(rebuilt).content_hash == SIDMap.load(old).content_hash
    assert SIDMap.load(old).content_hash in msg

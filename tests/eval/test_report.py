"""Benchmark tables and charts (recllm.eval.report)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from recllm.eval.report import Column, Panel, bar_chart, metrics_table, target_ranks


def test_target_ranks_are_one_based_and_zero_when_missing():
    ranked = [["a", "b", "c"], ["c", "a"], ["x"]]
    assert target_ranks(["b", "c", "a"], ranked) == [2, 1, 0]


def test_table_columns_extra_cells_and_missing_figures():
    rows = {
        "base": {"recall@5": 0.1, "ndcg@5": 0.05, "recall@10": 0.2, "ndcg@10": 0.0812345},
        "other model with a long name": {"recall@10": 0.25, "ndcg@10": 0.1, "speed": 3.14159},
    }
    text = metrics_table(rows, extra=(Column("speed", lambda f: f.get("speed"), ".2f"),))
    head, base, other = text.splitlines()
    assert head.split() == ["R@5", "N@5", "R@10", "N@10", "speed"]
    assert base.split()[-5:] == ["0.1000", "0.0500", "0.2000", "0.0812", "-"]
    assert other.split()[-5:] == ["-", "-", "0.2500", "0.1000", "3.14"]
    # names padded to one width: every value column lines up
    assert len({len(line) for line in (head, base, other)}) == 1


def test_bar_chart_writes_a_png_with_a_panel_per_figure(tmp_path: Path):
    rows = {"start": {"recall@10": 0.1, "qps": 0.3}, "tuned": {"recall@10": 0.2, "qps": 1.5}}
    path = tmp_path / "chart.png"
    panels = (Panel("recall@10", "Recall@10"), Panel("qps", "users / s", log=True))
    bar_chart(
        rows,
        panels,
        path,
        "title",
        grey=lambda n: n == "start",
        references={"ref": {"recall@10": 0.15, "qps": 1.0}},
    )
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no temp file left

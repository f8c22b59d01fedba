"""scripts/sid_real_check.py on the shared Amazon Beauty data (12,101 items), one method beside
the published LETTER SIDs: the markdown table written, the last line one JSON object."""

from __future__ import annotations

import pytest

from tests.scripts.running import run_script


@pytest.mark.slow  # TF-IDF and RQ-KMeans over 12,101 items (~30 s)
def test_sid_real_check_beauty_one_method(tmp_path, shared_data_or_none):
    if shared_data_or_none is None or not (shared_data_or_none / "amazon_p5" / "beauty").is_dir():
        pytest.skip("needs the shared data folder with amazon_p5/beauty")
    out = tmp_path / "check"
    args = ["--shared", str(shared_data_or_none), "--out", str(out), "--datasets", "beauty"]
    proc, figures = run_script("sid_real_check.py", *args, "--methods", "rq-kmeans", cwd=tmp_path)
    letter = figures["beauty/LETTER (published, 4 levels)"]
    assert letter == {"unique": 12088, "collisions": 13}  # the published file, as shipped
    ours = figures["beauty/rq-kmeans"]
    assert ours["unique"] + ours["collisions"] == 12101
    assert len(ours["utilization"]) == 3 and all(0 < u <= 1 for u in ours["utilization"])
    table = (out / "table.md").read_text()
    assert table.splitlines()[1] == "|---|---|---|---|---|---|---|---|"
    assert "| recllm rq-kmeans (3 x 256, tfidf) | 12,101 | 3 |" in table
    assert (out / "beauty" / "rq-kmeans").is_dir()
    assert table.strip() in proc.stdout

"""The quickstart's first steps on an installed wheel (run by .ci/run inside a fresh venv).

    python wheel_smoke.py CHECKOUT DATA WORKDIR

Checks that ``recllm`` is imported from the wheel (not from CHECKOUT), then runs what
``recllm quickstart`` does before it needs a model: the CLI's ``data stats`` and ``sid build``,
then in Python the data load and leave-one-out split (first 200 users), the SID map, and the
training texts rendered by ``TaskBuilder`` from the templates packaged in the wheel. No model is
downloaded. Prints what it checked; exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def main(checkout: Path, data: str, work: Path) -> None:
    import recllm
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.config import DataConfig
    from recllm.sid.sidmap import SIDMap
    from recllm.tasks import PROMPTS_DIR, TASKS, TaskBuilder, TaskConfig
    from recllm.vocab import SID_FORMAT

    package = Path(recllm.__file__).resolve().parent
    if package.is_relative_to(checkout.resolve()):
        raise SystemExit(f"wheel smoke: recllm was imported from the checkout ({package})")
    prompts = Path(TaskConfig().prompts_dir)
    if prompts != package / "prompts" or prompts != Path(PROMPTS_DIR):
        raise SystemExit(f"wheel smoke: TaskConfig().prompts_dir is {prompts}, not in {package}")
    print(f"wheel smoke: recllm {recllm.__version__} from {package}")
    # the quickstart's recipe settings travel in the wheel (recipes/quickstart.yaml)
    from recllm.train.plum import parse_recipe_args
    from recllm.train.recipe_args import packaged_recipe_config

    yaml_path = packaged_recipe_config("quickstart")
    if not yaml_path.is_relative_to(package):
        raise SystemExit(f"wheel smoke: quickstart.yaml is {yaml_path}, not a file in {package}")
    configs = parse_recipe_args(["--config", str(yaml_path)])
    print(f"wheel smoke: {yaml_path} parses ({configs[0].train_top_layers} top layers)")

    cli = shutil.which("recllm")
    if cli is None or not Path(cli).resolve().is_relative_to(Path(sys.prefix).resolve()):
        raise SystemExit(f"wheel smoke: the recllm script is {cli}, not the wheel's")
    subprocess.run([cli, "data", "stats", data], check=True)
    sids = work / "sids"
    # the quickstart's SID settings: RQ-KMeans 3 x 64 on TF-IDF + collaborative embeddings
    quantizer = ["--levels", "3", "--codebook-size", "64", "--collab-weight", "0.3", "--seed", "0"]
    subprocess.run(
        [cli, "sid", "build", "--data", data, *quantizer, "--no-cache", "--out", str(sids)],
        check=True,
    )
    metrics = json.loads((sids / "metrics.json").read_text())
    sid_map = SIDMap.load(sids)

    cfg = DataConfig(data_path=data, max_users=200)
    dataset = load_rec_dataset(config=cfg)
    split = split_dataset(dataset, cfg)
    builder = TaskBuilder(dataset.catalog, lambda i: SID_FORMAT.render(sid_map.code(i)))
    rows = builder.train_rows(split)
    tasks = {row["task"] for row in rows}
    expected = {t for t in TASKS if TaskConfig().mixture.get(t, 0) > 0}
    if tasks != expected:
        raise SystemExit(
            f"wheel smoke: training texts of tasks {sorted(tasks)}, expected {expected}"
        )
    (rec,) = builder.rec(split.test[:1])
    prompt = rec["prompt"][0]["content"]
    if (
        "<|sid_begin|>" not in prompt
        or SID_FORMAT.render(sid_map.code(rec["target"])) not in (rec["completion"][0]["content"])
    ):
        raise SystemExit(f"wheel smoke: the rec prompt carries no SIDs: {prompt!r}")
    print(
        f"wheel smoke: {metrics['items']} items with SIDs, {len(split.test)} test users, "
        f"{len(rows)} training texts from {prompts}; first test prompt:\n{prompt}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))

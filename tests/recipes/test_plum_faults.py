"""Faults of the PLUM and OneRec-Think recipes found by probing them as a new user (issue 29,
item 7), each reproduced on a tiny model and a small CSV data set, in-process.

- a rerun or a resume after the data at the same path changed reused the stale SID map and
  checkpoints (the model's SID map held items of the old catalog);
- a resume with another ``--rationales`` set mixed the two sets, and nothing recorded which;
- ``--learning_rate -1``, ``--max_length 1`` and a codebook larger than the catalog failed
  with a traceback after the output directory had been written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recllm.errors import UserError
from recllm.testing import save_tiny_model
from recllm.vocab import load_model_with_sids

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def write_data(root: Path, items: int, users: int = 40, per_user: int = 8) -> Path:
    """A catalog of ``items`` titled items with a genre, and ``users`` histories that together
    use every item (user u's items start at 7u: the histories overlap, so the split is dense)."""
    root.mkdir(parents=True, exist_ok=True)
    genres = ("Comedy", "Drama", "Horror", "Western")
    words = ("red", "blue", "night", "river", "star", "city", "storm", "garden", "ghost")
    lines = ["item_id,title,genre"] + [
        f"i{n},{words[n % 9]} {words[(n // 9) % 9]} {n},{genres[n % 4]}" for n in range(items)
    ]
    (root / "items.csv").write_text("\n".join(lines) + "\n")
    rows, t = ["user_id,item_id,timestamp"], 0
    for u in range(users):
        for j in range(per_user):
            t += 1
            rows.append(f"u{u},i{(7 * u + j) % items},{t}")
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    return root


def plum_configs(base: Path, data: Path, out: Path, *extra: str, config: Path | None = None):
    """The plum_sft recipe's configs for a few-second run on the tiny model."""
    from recllm.train.plum import parse_recipe_args

    return parse_recipe_args(
        [
            *("--config", str(config or ROOT / "recipes" / "plum_sft.yaml")),
            *("--model_name_or_path", str(base), "--data_path", str(data)),
            *("--max_users", "null", "--codebook_size", "8", "--warmup_steps_embed", "1"),
            *("--max_steps", "2", "--per_device_train_batch_size", "4"),
            *("--max_train_examples", "16", "--logging_steps", "1", "--warmup_steps", "0"),
            *("--bf16", "false", "--output_dir", str(out), *extra),
        ]
    )


def run_plum(*configs):
    from recllm.train.plum import run_plum as run

    return run(*configs)


def write_rationales(data: Path, out: Path, per_user: int) -> Path:
    """A rationale set from item metadata, as `recllm reason generate --data DATA --per_user N`
    writes it (the command's own library calls)."""
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint
    from recllm.tasks import reasoning

    cfg = DataConfig(data_path=str(data), max_users=None)
    dataset = load_rec_dataset(config=cfg)
    split = split_dataset(dataset, cfg)
    examples = reasoning.reason_examples(split, cfg.max_history, per_user=per_user)
    run = reasoning.generate_rationales(
        examples, dataset.catalog, source="metadata", progress=False
    )
    record = {
        "data_fingerprint": json.loads(json.dumps(data_fingerprint(split, dataset.catalog))),
        "source": "metadata",
        "per_user": per_user,
    }
    return reasoning.write_rationales(run, out, record)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("base") / "m", tie_word_embeddings=False)


def snapshot(out: Path) -> dict[str, int]:
    """Every file under ``out`` with its modification time (to show nothing was rewritten)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_a_rerun_after_the_data_changed_is_refused_not_served_stale_sids(base, tmp_path):
    """Before: the same settings over changed data reused OUTPUT_DIR/sids of the old catalog
    (the model's SID map held 60 items, 5 of them not in the new 55-item catalog)."""
    data, out = write_data(tmp_path / "data", 60), tmp_path / "run"
    quick = ("--max_steps", "1", "--warmup_steps_embed", "0")
    run_plum(*plum_configs(base, data, out, *quick))
    before = snapshot(out)
    assert json.loads((out / "resolved_config.json").read_text())["data_fingerprint"]["items"] == 60

    write_data(data, 55)  # the same path, other content
    with pytest.raises(UserError) as err:
        run_plum(*plum_configs(base, data, out, *quick))
    message = str(err.value)
    assert message.startswith(f"--data_path {data}: holds other data than the run in {out}")
    assert "items 55 (trained on 60)" in message and "other catalog item ids" in message
    assert "its sids, model were made from the old data" in message
    assert "--overwrite_output_dir true" in message and "another --output_dir" in message
    assert snapshot(out) == before  # nothing rewritten

    # the fix the message names: a fresh run over the new data, its SIDs from the new catalog
    run_plum(*plum_configs(base, data, out, *quick, "--overwrite_output_dir", "true"))
    _, _, sid_map = load_model_with_sids(out / "model")
    from recllm.data import DataConfig, load_rec_dataset

    catalog = load_rec_dataset(config=DataConfig(data_path=str(data), max_users=None)).catalog
    assert sorted(sid_map.item_ids) == sorted(catalog.ids) and len(sid_map) == 55


def test_the_sid_artifact_check_covers_the_data_content(base, tmp_path):
    """A SID map in OUTPUT_DIR/sids records the fingerprint of the data it was built from; the
    check refuses it for other data even when every setting is equal (control: same data)."""
    from dataclasses import asdict

    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint
    from recllm.sid.sidmap import SIDMap
    from recllm.train import stages
    from recllm.train.rundir import check_sid_artifact

    data, out = write_data(tmp_path / "data", 60), tmp_path / "run"
    configs = plum_configs(base, data, out)
    run = stages.validate(*configs)  # the recipe's stages up to the SID map: no training
    stages.load_data(run)
    stages.open_output_dir(run)
    stages.build_sids(run)
    _, data_cfg, sid_cfg, *_ = configs
    meta = SIDMap.load(out / "sids").meta

    def expected() -> dict:
        dataset = load_rec_dataset(config=data_cfg)
        split = split_dataset(dataset, data_cfg)
        return {
            "sid_config": asdict(sid_cfg),
            "data_config": asdict(data_cfg),
            "data_fingerprint": data_fingerprint(split, dataset.catalog),
        }

    check_sid_artifact(out / "sids", meta, expected())  # control: the data it was built from
    write_data(data, 55)
    with pytest.raises(UserError) as err:
        check_sid_artifact(out / "sids", meta, expected())
    assert "data_fingerprint.items: 60 -> 55" in str(err.value)


def test_resume_after_the_data_changed_is_refused(base, tmp_path):
    """Before: --resume_from_checkpoint true over changed data resumed a checkpoint trained on
    the old data. Control: over the unchanged data the same resume runs."""
    data, out = write_data(tmp_path / "data", 60), tmp_path / "run"
    every_step = ("--save_strategy", "steps", "--save_steps", "1")
    run_plum(*plum_configs(base, data, out, *every_step))
    assert (out / "checkpoint-2" / "recllm_complete.json").is_file()
    (out / "model").rename(tmp_path / "model_first")  # as if killed before the final save
    before = snapshot(out)

    write_data(data, 55)
    resume = ("--resume_from_checkpoint", "true")
    with pytest.raises(UserError) as err:
        run_plum(*plum_configs(base, data, out, *every_step, *resume))
    message = str(err.value)
    assert message.startswith(f"--data_path {data}: holds other data than the run in {out}")
    assert "checkpoint-2" in message and "trained on the old data" in message
    assert "another --output_dir" in message and "--overwrite_output_dir true" in message
    assert snapshot(out) == before and not (out / "model").exists()

    write_data(data, 60)  # the data the checkpoints were trained on: the resume goes on
    run_plum(*plum_configs(base, data, out, *every_step, *resume))
    assert (out / "model" / "model.safetensors").is_file()


def test_onerec_think_records_its_rationales_and_refuses_another_set(base, tmp_path):
    """Before: a rerun (or resume) with another --rationales set trained on it in the same
    output directory, the model recorded only the second set, and resolved_config.json no set
    at all. Control: the same set again is accepted."""
    from recllm.train.think import parse_recipe_args, run_think

    data, out = write_data(tmp_path / "data", 60), tmp_path / "run"
    first = write_rationales(data, tmp_path / "rat1", per_user=1)
    second = write_rationales(data, tmp_path / "rat2", per_user=2)

    def configs(rationales: Path):
        return parse_recipe_args(
            [
                *("--config", str(ROOT / "recipes" / "onerec_think.yaml")),
                *("--model_name_or_path", str(base), "--data_path", str(data)),
                *("--rationales", str(rationales), "--codebook_size", "8"),
                *("--train_top_layers", "null", "--max_steps", "1", "--max_train_examples", "16"),
                *("--per_device_train_batch_size", "4", "--bf16", "false"),
                *("--output_dir", str(out)),
            ]
        )

    model_dir = run_think(*configs(first))
    resolved = json.loads((out / "resolved_config.json").read_text())
    recorded = resolved["think"]
    assert recorded["rationales"] == str(first) and len(recorded["rationales_sha256"]) == 64
    think = json.loads((model_dir / "recllm_vocab.json").read_text())["recommender"]["think"]
    assert think["rationales_sha256"] == recorded["rationales_sha256"]
    before = snapshot(out)

    with pytest.raises(UserError) as err:
        run_think(*configs(second))
    assert "think.rationales" in str(err.value) and "--overwrite_output_dir true" in str(err.value)
    assert snapshot(out) == before

    run_think(*configs(first))  # control: the same set reruns


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning_rate", "-1"], "--learning_rate -1.0: must be a finite number > 0"),
        (["--warmup_learning_rate", "0"], "--warmup_learning_rate 0.0: must be a finite number"),
        (["--max_length", "1"], "--max_length 1: too short"),
        (["--max_length", "8"], "--max_length 8: too short for any training example"),
    ],
    ids=["learning_rate", "warmup_learning_rate", "max_length_1", "max_length_8"],
)
def test_bad_values_stop_before_anything_is_written(base, tmp_path, flags, message):
    data, out = write_data(tmp_path / "data", 60), tmp_path / "run"
    with pytest.raises(UserError) as err:
        run_plum(*plum_configs(base, data, out, *flags))
    assert str(err.value).startswith(message) and ". Fix: " in str(err.value)
    assert not out.exists()


def test_codebook_larger_than_the_catalog_is_the_sid_build_error(base, tmp_path):
    """`--codebook_size 64` on 40 items: the one line `recllm sid build` gives, before any
    directory is created (before: a traceback from the quantizer after OUTPUT_DIR was
    written)."""
    from recllm.data import load_rec_dataset
    from recllm.sid.build import build_sid_map

    data, out = write_data(tmp_path / "data", 40), tmp_path / "run"
    _, data_cfg, sid_cfg, *_ = plum_configs(base, data, out, "--codebook_size", "64")
    # what `recllm sid build --codebook-size 64` runs, and prints as `recllm: error: <message>`
    with pytest.raises(ValueError) as built:
        build_sid_map(load_rec_dataset(config=data_cfg), sid_cfg, data_cfg)
    sid_build = str(built.value)
    assert "40 items but codebook size 64" in sid_build
    with pytest.raises(UserError) as err:
        run_plum(*plum_configs(base, data, out, "--codebook_size", "64"))
    # the same words; house errors end their problem with ". Fix:", the quantizer's ValueError
    # with "; Fix:"
    assert str(err.value) == sid_build.replace("; Fix: ", ". Fix: ")
    assert not out.exists()


def test_max_length_floor_is_the_shortest_example_there_can_be(base, tmp_path):
    """The floor the --max_length error names passes validation, one token less does not; and
    every example the recipe trains is at least that long (the floor is a true lower bound)."""
    from recllm.train import stages

    data, out = write_data(tmp_path / "data", 60), tmp_path / "run"
    with pytest.raises(UserError) as err:
        stages.validate(*plum_configs(base, data, out, "--max_length", "8"))
    floor = int(str(err.value).split("pass --max_length ")[1].split()[0])
    assert floor > 8
    with pytest.raises(UserError):
        stages.validate(*plum_configs(base, data, out, "--max_length", str(floor - 1)))
    run = stages.validate(*plum_configs(base, data, out, "--max_length", str(floor)))
    assert not out.exists()
    # the real examples, through the recipe's own stages
    stages.load_data(run)
    stages.build_sids(run)
    stages.extend_vocabulary(run)
    stages.build_texts(run)
    tok = run.tokenizer
    lengths = [
        len(
            tok(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=False))["input_ids"]
        )
        for r in run.train
    ]
    assert min(lengths) >= floor


def test_dialogues_are_checked_and_recorded_before_any_write(base, tmp_path):
    """--dialogues of other data stops before anything is written (before: after the SID map
    and resolved_config.json, which then refused the corrected rerun); the set used is recorded
    (SHA-256 of its conversations), so other conversations at the same path are other settings."""
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint
    from recllm.tasks.dialogue import build_conversations, write_dialogues

    data, out = write_data(tmp_path / "data", 60), tmp_path / "run"
    _, data_cfg, *_ = plum_configs(base, data, out)
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    fingerprint = json.loads(json.dumps(data_fingerprint(split, dataset.catalog)))
    convs = build_conversations(split, dataset.catalog)
    dialogues = tmp_path / "dialogues"

    cfg = yaml.safe_load((ROOT / "recipes" / "plum_sft.yaml").read_text())
    cfg["mixture"]["dialogue"] = 1.0
    config = tmp_path / "dialogue.yaml"
    config.write_text(yaml.safe_dump(cfg))
    flags = ("--dialogues", str(dialogues))

    def load(record: dict, conversations):
        from recllm.train import stages

        write_dialogues(conversations, dialogues, record, source="metadata")
        run = stages.validate(*plum_configs(base, data, out, *flags, config=config))
        stages.load_data(run)
        return run

    write_dialogues(convs, dialogues, {"data_fingerprint": {"other": 1}}, source="metadata")
    with pytest.raises(UserError, match="was made from other data than this run's"):
        run_plum(*plum_configs(base, data, out, *flags, config=config))
    assert not out.exists()
    whole = load({"data_fingerprint": fingerprint}, convs)
    assert [c.to_dict() for c in whole.dialogues] == [c.to_dict() for c in convs]
    assert len(whole.resolved["dialogues_sha256"]) == 64
    fewer = load({"data_fingerprint": fingerprint}, convs[1:])
    assert fewer.resolved["dialogues_sha256"] != whole.resolved["dialogues_sha256"]
    assert not out.exists()

"""The dialogue task trained: a tiny model trained on the dialogue mixture through the PLUM
recipe's own stages (``run_plum``) learns the reply format.

Measured on the same rows and prompts before training (at the start of the SFT stage, by a
trainer callback) and after (the saved model directory):

- the loss on dialogue rows (completion tokens: the pick's SID span, title and reason) falls;
- greedy replies to held conversations (test users, never trained on), decoded without any
  constraint, all open with a well-formed SID span and a new line, as the template writes
  them, and the project's parser (``resolve_spans``) resolves most of those spans to catalog
  items. Before training no reply does (the control: the format is learned, not given by the
  decoder).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerCallback

from recllm.testing import save_tiny_model

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def write_data(root: Path, items: int = 24, users: int = 30, per_user: int = 6) -> Path:
    """Items with a title and a genre (dialogue turns steer by genre); every item used."""
    root.mkdir(parents=True, exist_ok=True)
    genres = ("Comedy", "Drama", "Horror")
    words = ("red", "blue", "night", "river", "star", "city")
    lines = ["item_id,title,genre"] + [
        f"i{n},{words[n % 6]} {words[(n // 6) % 6]},{genres[n % 3]}" for n in range(items)
    ]
    (root / "items.csv").write_text("\n".join(lines) + "\n")
    rows, t = ["user_id,item_id,timestamp"], 0
    for u in range(users):
        for j in range(per_user):
            t += 1
            rows.append(f"u{u},i{(5 * u + j) % items},{t}")
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    return root


class Probe:
    """Dialogue rows and held prompts of one run, scored the same way on any model."""

    def __init__(self, configs, sid_dir: Path) -> None:
        from recllm.data import load_rec_dataset, split_dataset
        from recllm.sid.sidmap import SIDMap
        from recllm.tasks import TaskBuilder
        from recllm.tasks.dialogue import dialogue_prompt
        from recllm.vocab import SID_FORMAT

        _, data_cfg, _, task_cfg, _, _ = configs
        dataset = load_rec_dataset(config=data_cfg)
        split = split_dataset(dataset, data_cfg)
        self.sid_map, self.catalog = SIDMap.load(sid_dir), dataset.catalog
        builder = TaskBuilder(
            dataset.catalog, lambda i: SID_FORMAT.render(self.sid_map.code(i)), task_cfg
        )
        self.rows = list(builder.dialogue(split))[:24]
        # held: test users' histories, a conversation the model never saw
        self.prompts = [dialogue_prompt(builder, ex.history) for ex in split.test[:8]]

    @torch.no_grad()
    def loss(self, model, tok) -> float:
        """Mean NLL per completion token of the dialogue rows."""
        total, count = 0.0, 0
        for row in self.rows:
            head = tok.apply_chat_template(
                row["prompt"], tokenize=False, add_generation_prompt=True
            )
            full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
            h = tok(head, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([tok(full, add_special_tokens=False)["input_ids"]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            targets = ids[0, len(h) :]
            total -= float(logp[len(h) - 1 : -1].gather(1, targets[:, None]).sum())
            count += len(targets)
        return total / count

    def replies(self, model, tok) -> list[tuple[str, list]]:
        """Greedy replies with no constraint at all, and their SID spans as the parser reads
        them."""
        from recllm.decode import SIDTrie
        from recllm.decode.text import generate_text, resolve_spans
        from recllm.vocab import SID_FORMAT

        ids = SID_FORMAT.token_ids(tok, self.sid_map.codebook_sizes)
        trie = SIDTrie.from_sid_map(self.sid_map, ids)
        texts = generate_text(model, tok, self.prompts, trie, constrained=False, max_new_tokens=12)
        return [(t, resolve_spans(t, self.sid_map, self.catalog)) for t in texts]


def opens_with_a_span(reply: str, spans: list) -> bool:
    """The reply opens with a well-formed SID span (one in-range code per level between the
    markers) and a new line, the template's format."""
    return (
        bool(spans)
        and spans[0].start == 0
        and spans[0].match != "invalid"
        and reply[spans[0].end : spans[0].end + 1] == "\n"
    )


def test_dialogue_mixture_teaches_the_reply_format(tmp_path):
    from recllm.train.plum import parse_recipe_args, run_plum
    from recllm.vocab import load_model_with_sids

    data = write_data(tmp_path / "data")
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    cfg = yaml.safe_load((ROOT / "recipes" / "plum_sft.yaml").read_text())
    cfg["mixture"] = {task: 0.0 for task in cfg["mixture"]} | {"dialogue": 1.0}
    config = tmp_path / "dialogue.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    configs = parse_recipe_args(
        [
            *("--config", str(config), "--model_name_or_path", str(base)),
            *("--data_path", str(data), "--max_users", "null", "--max_history", "5"),
            *("--codebook_size", "4", "--warmup_steps_embed", "0", "--max_train_examples", "null"),
            *("--max_steps", "80", "--learning_rate", "5e-3", "--warmup_steps", "0"),
            *("--lr_scheduler_type", "constant", "--per_device_train_batch_size", "8"),
            *("--bf16", "false", "--logging_steps", "10", "--output_dir", str(out)),
        ]
    )
    before: dict[str, object] = {}

    class Before(TrainerCallback):
        """The run's own model at the start of SFT (SIDs built, vocabulary extended)."""

        def on_train_begin(self, args, state, control, model=None, processing_class=None, **kw):
            probe = Probe(configs, out / "sids")
            was_training = model.training
            model.eval()
            before["loss"] = probe.loss(model, processing_class)
            before["replies"] = probe.replies(model, processing_class)
            model.train(was_training)

    model_dir = run_plum(*configs, callbacks=[Before()])
    model, tok, sid_map = load_model_with_sids(model_dir)
    probe = Probe(configs, out / "sids")
    assert probe.rows and all(r["task"] == "dialogue" for r in probe.rows)
    after_loss = probe.loss(model.eval(), tok)
    after = probe.replies(model, tok)

    assert after_loss < 0.5 * before["loss"], (before["loss"], after_loss)
    assert all(opens_with_a_span(reply, spans) for reply, spans in after), after
    # ... naming catalog items: 24 of the 64 SIDs of a 4 x 4 x 4 grid are items, so a span that
    # is only well-formed names one 3 times in 8; the trained model names one 5 times
    exact = [spans[0].item_id for _, spans in after if spans[0].match == "exact"]
    assert len(exact) >= 4 and all(item in sid_map for item in exact), after
    # control: the same prompts before training: no reply opens with a SID span
    assert not any(opens_with_a_span(reply, spans) for reply, spans in before["replies"])

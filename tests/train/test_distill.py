"""Teacher distillation (recllm.train.distill): SIDs read back from token ids, per-level targets
equal to the teacher's prefix masses, and a real TRL run whose student follows the teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trl import SFTConfig, SFTTrainer

from recllm.baselines.sasrec import SASRec, SASRecConfig, train_sasrec
from recllm.data.splits import leave_one_out
from recllm.data.types import Interactions
from recllm.sid.sidmap import SIDMap
from recllm.train.distill import SIDTeacher, distill_trainer_class
from recllm.train.seqlm import SeqLMConfig, build_seqlm, history_text, training_dataset
from recllm.vocab import SID_FORMAT

ITEMS = [f"i{n}" for n in range(12)]


def sid_map() -> SIDMap:
    return SIDMap(ITEMS, np.array([(n // 4, n % 4) for n in range(12)]), (3, 4))


def tokenizer_and_ids():
    model, tok = build_seqlm(sid_map(), SeqLMConfig(hidden_size=32, num_layers=1, num_heads=2))
    return model, tok, SID_FORMAT.token_ids(tok, (3, 4))


def random_teacher(items=ITEMS, max_len=8) -> SASRec:
    torch.manual_seed(0)
    return SASRec(items, SASRecConfig(hidden_size=16, num_heads=2, max_len=max_len)).eval()


def test_items_are_read_back_from_token_ids_right_aligned():
    _, tok, ids = tokenizer_and_ids()
    # the teacher's order differs from the SID map's, and it knows one item the map lacks
    teacher = SIDTeacher(random_teacher([*ITEMS[::-1], "extra"]), sid_map(), ids)
    rows = [ITEMS[:3], ITEMS[5:11]]
    enc = tok(
        [history_text(r, sid_map(), None) for r in rows],
        add_special_tokens=False,
        padding=True,
        return_tensors="pt",
    )
    found = teacher.items_in(enc["input_ids"])
    names = [[teacher.teacher.item_ids[i - 1] if i else None for i in r] for r in found["items"]]
    assert names == [[None] * 3 + rows[0], rows[1]]
    assert found["codes"][1, 0].tolist() == list(sid_map().code("i5"))
    first = found["begin"][0, 3]
    assert enc["input_ids"][0, first] == ids.begin_id and found["begin"][0, 0] == -1
    assert bool(found["trained"][:, 3:].all())
    # labels: the prompt's items are not trained, the last item (the completion) is
    labels = enc["input_ids"].clone()
    labels[:, : int(found["begin"][1, -1]) + 1] = -100  # up to row 1's last <|sid_begin|>
    trained = teacher.items_in(enc["input_ids"], labels)["trained"]
    assert trained[1].tolist() == [False] * 5 + [True]


def test_items_of_a_compact_history_are_read_without_markers():
    """A compact history (``rec_history_markers: false``: bare code tokens back to back) and a
    marked answer after it: every item is found, each ``begin`` is the position right before
    its first code; a cut-off SID at the end is no item. Control: the items' first codes alone,
    back to back, are no items at all."""
    _, tok, ids = tokenizer_and_ids()
    teacher = SIDTeacher(random_teacher(), sid_map(), ids)
    codes = "".join(SID_FORMAT.render(sid_map().code(i))[13:-11] for i in ITEMS[:4])
    text = f"x{codes}\n{SID_FORMAT.render(sid_map().code('i9'))}<a_1>"
    enc = tok([text], add_special_tokens=False, return_tensors="pt")
    found = teacher.items_in(enc["input_ids"])
    names = [teacher.teacher.item_ids[i - 1] for i in found["items"][0]]
    assert names == [*ITEMS[:4], "i9"]
    row = enc["input_ids"][0]
    for col, begin in enumerate(found["begin"][0].tolist()):
        assert ids.level_code(int(row[begin + 1])) == (0, sid_map().code(names[col])[0])
    assert row[found["begin"][0, -1]] == ids.begin_id  # the answer's marker
    firsts = "".join(f"<a_{sid_map().code(i)[0]}>" for i in ITEMS[:4])
    enc = tok([f"x{firsts}"], add_special_tokens=False, return_tensors="pt")
    assert teacher.items_in(enc["input_ids"])["items"].numel() == 0


def test_level_targets_are_the_teacher_mass_under_the_true_prefix():
    _, _, ids = tokenizer_and_ids()
    teacher = SIDTeacher(random_teacher(), sid_map(), ids)
    probs = torch.softmax(torch.randn(5, 12, generator=torch.Generator().manual_seed(1)), -1)
    true = torch.tensor([sid_map().code(f"i{n}") for n in (0, 5, 7, 11, 2)])
    targets = teacher.level_targets(probs, true)
    codes = sid_map().codes
    for p in range(5):
        first = [float(probs[p, codes[:, 0] == a].sum()) for a in range(3)]
        assert targets[0][p].tolist() == pytest.approx(first, abs=1e-6)
        under = codes[:, 0] == int(true[p, 0])
        second = [float(probs[p, under & (codes[:, 1] == b)].sum()) for b in range(4)]
        second = [m / sum(second) for m in second]
        assert targets[1][p].tolist() == pytest.approx(second, abs=1e-6)


def test_loss_is_zero_only_where_the_student_matches_the_teacher():
    """The KL at a hand-made student that holds the teacher's own log-targets is ~0; a student
    sure of one code has a large one."""
    _, tok, ids = tokenizer_and_ids()
    teacher = SIDTeacher(random_teacher(), sid_map(), ids)
    text = history_text(ITEMS[:4], sid_map(), None)
    input_ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    found = teacher.items_in(input_ids)
    select = torch.zeros_like(found["trained"])
    select[0, 1:] = True
    probs = teacher.next_item_probs(found["items"], select)
    targets = teacher.level_targets(probs, found["codes"][select])
    # a head whose rows are one-hot per token and hidden states that carry log-targets
    vocab, width = ids.last_id + 1, ids.last_id + 1
    head = torch.eye(vocab, width)
    hidden = torch.full((1, input_ids.shape[1], width), -50.0)
    for k, start in enumerate(found["begin"][0, 1:].tolist()):
        for level in range(2):
            rows = ids.level_ids(level)
            hidden[0, start + level, rows.start : rows.stop] = targets[level][k].log()
    kl, count = teacher.loss(hidden, head, None, input_ids)
    assert count == 3 and float(kl) == pytest.approx(0.0, abs=1e-5)
    sure = torch.zeros_like(hidden)  # control: a student sure of code 0 at every level
    for level in range(2):
        sure[..., ids.code_id(level, 0)] = 10.0
    control, _ = teacher.loss(sure, head, None, input_ids)
    assert float(control) > 1.0


def skip_split(step: int, users: int = 24, length: int = 9):
    seqs = {f"u{u}": [ITEMS[(u + step * t) % 12] for t in range(length)] for u in range(users)}
    return leave_one_out(Interactions(seqs), max_history=20)


def next_item_probability(model, tok, history: list[str], item: str) -> float:
    """P(item | history) of a SID-sequence model (product over its code tokens)."""
    text = history_text(history, sid_map(), None)
    code = sid_map().code(item)
    ids = SID_FORMAT.token_ids(tok, (3, 4))
    prompt = tok(text, add_special_tokens=False)["input_ids"] + [ids.begin_id]
    logp = 0.0
    with torch.no_grad():
        for level, c in enumerate(code):
            logits = model(torch.tensor([prompt])).logits[0, -1]
            logp += float(torch.log_softmax(logits, -1)[ids.code_id(level, c)])
            prompt.append(ids.code_id(level, c))
    return float(np.exp(logp))


def test_a_real_trl_run_moves_the_student_toward_its_teacher(tmp_path, torch_single_thread):
    """Data where the next item is the current + 1; a teacher trained where it is + 2. With the
    teacher's loss the student gives item + 2 real probability; the control (the same run
    without the teacher) gives it almost none."""
    sas_cfg = SASRecConfig(hidden_size=32, num_heads=2, max_len=10, dropout=0.0, epochs=40)
    teacher, _ = train_sasrec(skip_split(2), ITEMS, sas_cfg, progress=False)
    split = skip_split(1)
    small = SeqLMConfig(
        hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
        attention_dropout=0.0, max_items=8,
    )  # fmt: skip

    def train(weight: float):
        model, tok = build_seqlm(sid_map(), small)
        args = SFTConfig(
            output_dir=str(tmp_path / f"w{weight}"), max_steps=150, learning_rate=3e-3,
            per_device_train_batch_size=8, report_to="none", save_strategy="no",
            use_cpu=True, seed=0, logging_steps=50, max_length=None, bf16=False,
        )  # fmt: skip
        data = training_dataset(split, sid_map(), tok, small.max_items)
        if weight:
            ids = SID_FORMAT.token_ids(tok, (3, 4))
            trainer = distill_trainer_class(SFTTrainer)(
                model=model, args=args, train_dataset=data, processing_class=tok,
                teacher=SIDTeacher(teacher, sid_map(), ids), distill_weight=weight,
            )  # fmt: skip
        else:
            trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        forwards = []
        hook = model.register_forward_pre_hook(lambda *a: forwards.append(1))
        trainer.train()
        hook.remove()
        # one forward a step, as without a teacher (asking TRL for the outputs adds a second,
        # full-logits forward: that tripled the chat model's step)
        assert len(forwards) == args.max_steps
        model.eval()
        logged = [h for h in trainer.state.log_history if "distill_kl" in h]
        return model, tok, logged

    histories = [[ITEMS[(s + t) % 12] for t in range(4)] for s in range(12)]
    skip2 = [ITEMS[(s + 3 + 2) % 12] for s in range(12)]  # the teacher's next item (+2)
    skip1 = [ITEMS[(s + 3 + 1) % 12] for s in range(12)]

    control, tok, logged = train(0.0)
    assert logged == []  # no teacher, no teacher loss
    distilled, tok, logged = train(3.0)
    assert all(h["distill_items"] > 0 for h in logged)  # every step had items to distill

    def mean_probability(model, targets):
        pairs = zip(histories, targets, strict=True)
        return np.mean([next_item_probability(model, tok, h, t) for h, t in pairs])

    p2 = [mean_probability(m, skip2) for m in (control, distilled)]
    p1 = [mean_probability(m, skip1) for m in (control, distilled)]
    assert p1[0] > 0.8 and p2[0] < 0.05  # the control learned the data alone
    # the teacher moved mass onto its item (measured: .076 against .006; p(+1) .13 against .94)
    assert p2[1] > 0.04 and p2[1] > 5 * p2[0] and p1[1] < p1[0] - 0.3

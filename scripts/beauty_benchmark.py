"""Amazon Beauty (P5/TIGER split): recllm's generative recommender beside TIGER and a same-run SASRec.

    python scripts/beauty_benchmark.py                         # ~70 min on 2 cores
    python scripts/beauty_benchmark.py --ensemble 1 --recllm-minutes 5 --sasrec-minutes 3 \
        --eval-users 2000                                      # a quick look

recllm side: semantic IDs (TF-IDF item text + collaborative PPMI signal from the training split,
balanced residual k-means 3 x 256, collisions reassigned) -> ``--ensemble`` from-scratch
Qwen3-architecture decoders over SID sequences, one per seed (recllm.train.seqlm, each trained
through TRL's SFTTrainer within ``--recllm-minutes``; optionally the epoch with the best Recall@10
on ``--valid-users`` validation users, recllm.train.select) -> trie-constrained SID beam search
(``--beams``), of the first decoder alone and of all of them together (their log-probs averaged)
-> Recall/NDCG@5/10. SASRec side: full-softmax cross-entropy over all items
(recllm.baselines.sasrec) within ``--sasrec-minutes``, epoch chosen on valid. Both: leave-one-out,
full ranking over all 12,101 items, histories cut to the last 20 items, seen items not removed
(../shared/data/README.md). Prints the table beside TIGER's published row; writes
``metrics.json`` and ``recall.png`` into ``--out``; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from recllm.eval.published import BEAUTY_PUBLISHED as PUBLISHED
from recllm.eval.published import COLUMNS
from recllm.sid.config import EMBEDDINGS, METHODS, SIDConfig


def parse_args() -> argparse.Namespace:
    from recllm.testing import shared_data_dir

    default = None if (d := shared_data_dir()) is None else d / "amazon_p5" / "beauty"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=default, help="Beauty folder (P5 layout)")
    p.add_argument("--out", default="outputs/beauty_benchmark", help="output directory")
    p.add_argument(
        "--recllm-minutes", type=float, default=30.0, help="training budget of each decoder"
    )
    p.add_argument("--sasrec-minutes", type=float, default=12.0, help="0 = skip SASRec")
    p.add_argument(
        "--epochs", type=float, default=14, help="schedule length (the budget may end it first)"
    )
    # 256 wide, MLP 1024 (2.3M parameters): test R@10 .0615-.0625 against .0572 at 128 / 256
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.1, help="attention dropout")
    p.add_argument(
        "--hidden-dropout",
        type=float,
        default=0.0,
        help="dropout on embeddings and attention/MLP outputs (recllm.train.seqlm)",
    )
    p.add_argument("--mlp", type=int, default=1024, help="MLP width (0 = 2 x hidden)")
    p.add_argument(
        "--sid-method",
        choices=METHODS,
        default="balanced",
        help="quantizer of the item vectors (recllm.sid): residual k-means, balanced residual "
        "k-means (OneRec; higher R@5/N@5 in 2 seeds, R@10 within seed noise) or a "
        "residual-quantized VAE (TIGER)",
    )
    p.add_argument(
        "--contrastive",
        type=float,
        default=0.0,
        help="rq-vae only: weight of the co-occurrence InfoNCE loss on the latents (PLUM)",
    )
    p.add_argument("--codebook", type=int, default=256)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument(
        "--collab",
        type=float,
        default=0.6,
        help="collaborative share of item vectors (0.3: R@10 .0542, 0.6: .0572, 0.9: .0568)",
    )
    p.add_argument(
        "--embedding",
        choices=EMBEDDINGS,
        default="tfidf",
        help="text half of the item vectors (recllm.sid.embed): TF-IDF, a causal LM's mean-pooled "
        "states, or a sentence-transformers model; lm/st need --text-model",
    )
    p.add_argument(
        "--text-model",
        default=None,
        help="model path or known name for --embedding lm/st (e.g. all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--collab-source",
        choices=("ppmi", "sasrec"),
        default="ppmi",
        help="collaborative item vectors: SVD of PPMI co-occurrence, or the item embeddings of "
        "the run's SASRec (trained first, within --sasrec-minutes, and reused for its row)",
    )
    p.add_argument(
        "--item-tokens",
        action="store_true",
        help="ablation: no semantic IDs, one token per item (a 1-level code = the item's index), "
        "so the decoder scores items with a full softmax as SASRec does",
    )
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--eval-users", type=int, default=0, help="first N test users (0 = all)")
    p.add_argument(
        "--valid-users",
        type=int,
        default=0,
        help="validation users scored at each epoch end; the best epoch is kept (0 = last epoch)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=0,
        help="stop after N epochs without validation gain (0 = never: early high-LR epochs are "
        "noisy on a few validation users; a patience of 4 stopped a run at epoch 8 of 14)",
    )
    p.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast in training (auto: where the CPU/GPU has native bf16; 1.5x faster "
        "per step on AVX512-BF16 cores); evaluation always runs in float32",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the decoder's initialization and of its data order (replicates)",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        default=2,
        help="decoders trained (seeds --seed, --seed + 1, ...; each within --recllm-minutes) and "
        "decoded together by averaging their log-probs; with 2 or more, the first is also "
        "evaluated alone, side by side",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    args = p.parse_args()
    if args.ensemble < 1:
        p.error("--ensemble must be >= 1")
    return args


def table(rows: dict[str, dict[str, float]]) -> str:
    head = f"{'method':<28}" + "".join(
        f"{c.replace('recall', 'R').replace('ndcg', 'N'):>9}" for c in COLUMNS
    )
    lines = [head]
    for name, fig in rows.items():
        lines.append(f"{name:<28}" + "".join(f"{fig[c]:>9.4f}" for c in COLUMNS))
    return "\n".join(lines)


def sid_config(args) -> SIDConfig:
    """The SID settings of this run, from the command line."""
    return SIDConfig(
        method=args.sid_method,
        contrastive_weight=args.contrastive,
        levels=args.levels,
        codebook_size=args.codebook,
        collab_weight=args.collab,
        embedding=args.embedding,
        text_model=args.text_model,
    )


def sid_dir_name(args, sasrec: bool = False) -> str:
    """The SID cache folder named by this run's settings (e.g. ``sids_balanced``)."""
    parts = ["sids"]
    if args.embedding != "tfidf":
        parts.append(args.embedding)
    if sasrec:
        parts.append("sasrec")
    if args.sid_method != "rq-kmeans":
        parts.append(args.sid_method)
    if args.contrastive:
        parts.append(f"c{args.contrastive:g}")
    if (args.levels, args.codebook) != (3, 256):
        parts.append(f"{args.levels}x{args.codebook}")
    return "_".join(parts)


def sasrec_fused_embeddings(args, dataset, split, sasrec, out: Path) -> Path:
    """This run's item text vectors fused with the trained SASRec's item embeddings (``.npz``)."""
    from recllm.sid.embed import fuse, item_embeddings, save_embeddings

    text_cfg = dataclasses.replace(sid_config(args), collab_weight=0.0)
    text, _ = item_embeddings(dataset.catalog, split, text_cfg)
    index = sasrec.index
    weight = sasrec.item_emb.weight.detach().float().cpu().numpy()
    collab = weight[[index[i] for i in dataset.catalog.ids]]
    # items absent from training keep their random init: zero them, as the PPMI source does,
    # so their codes follow their text alone
    seen = {i for seq in split.train.sequences.values() for i in seq}
    collab[[k for k, i in enumerate(dataset.catalog.ids) if i not in seen]] = 0.0
    return save_embeddings(
        out / "item_vectors_sasrec.npz", dataset.catalog.ids, fuse(text, collab, args.collab)
    )


def train_recllm(
    args, dataset, split, out: Path, embeddings: Path | None = None, seed: int | None = None
):
    """SIDs -> from-scratch SID-sequence decoder, trained within the budget; returns its dir.

    ``embeddings``: precomputed fused item vectors (``--collab-source sasrec``) for the SIDs.
    ``seed``: the decoder's seed (default ``--seed``); another seed saves to
    ``recllm_model_seed<N>``. The SIDs are built once and reused by every seed.
    """
    seed = args.seed if seed is None else seed
    name = "recllm_model" if seed == args.seed else f"recllm_model_seed{seed}"
    from trl import SFTConfig, SFTTrainer

    from recllm.data import DataConfig
    from recllm.data.fingerprint import data_fingerprint
    from recllm.sid.build import build_sid_map, write_sid_artifact
    from recllm.sid.sidmap import SIDMap
    from recllm.train.seqlm import (
        PROMPT_STYLE,
        SeqLMConfig,
        build_seqlm,
        time_budget_callback,
        training_dataset,
    )
    from recllm.train.sft import bf16_fast
    from recllm.vocab import save_model_with_sids

    sid_cfg = sid_config(args)
    if args.item_tokens:
        import numpy as np

        ids = dataset.catalog.ids
        codes = np.arange(len(ids))[:, None]
        sid_map = SIDMap(ids, codes, (len(ids),), {"ablation": "one token per item"})
    else:
        sid_dir = out / sid_dir_name(args, sasrec=embeddings is not None)
        sid_map = SIDMap.load(sid_dir) if (sid_dir / "sid_map.json").is_file() else None
        if sid_map is not None and sid_map.meta.get("sid_config") != asdict(sid_cfg):
            logging.info("%s was built with other SID settings: rebuilding it", sid_dir)
            sid_map = None
        if sid_map is None:
            build = build_sid_map(
                dataset,
                sid_cfg,
                DataConfig(data_path=str(args.data)),
                split=split,
                embeddings=embeddings,
            )
            write_sid_artifact(build, sid_dir, overwrite=True)
            sid_map = SIDMap.load(sid_dir)
    cfg = SeqLMConfig(
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.heads,
        intermediate_size=args.mlp or 2 * args.hidden,
        attention_dropout=args.dropout,
        hidden_dropout=args.hidden_dropout,
        max_items=20,
        model_seed=seed,
    )
    model, tok = build_seqlm(sid_map, cfg)
    train = training_dataset(split, sid_map, tok, cfg.max_items)
    logging.info(
        "recllm: %d training windows, %d tokens, %.2fM parameters",
        len(train),
        sum(len(r) for r in train["input_ids"]),
        model.num_parameters() / 1e6,
    )
    budget = time_budget_callback(args.recllm_minutes)
    callbacks = [budget]
    select = None
    if args.valid_users:
        from recllm.eval.run import evaluate_recommender
        from recllm.tasks.prompting import PromptSpec
        from recllm.train.select import BestOnValidation

        valid = split.valid[: args.valid_users]
        spec = PromptSpec(style=PROMPT_STYLE, max_history=cfg.max_items)

        def on_valid(m):
            return evaluate_recommender(
                m,
                tok,
                sid_map,
                valid,
                spec,
                dataset.catalog,
                beams=args.beams,
                batch_size=64,
                progress=False,
            ).metrics

        select = BestOnValidation(on_valid, metric="recall@10", patience=args.patience or None)
        callbacks.append(select)
    sft = SFTConfig(
        output_dir=str(out / "recllm_run" / str(seed)),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=200,
        weight_decay=0.1,
        max_length=None,
        train_sampling_strategy="group_by_length",
        bf16=args.bf16 == "on" or (args.bf16 == "auto" and bf16_fast()),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=200,
        seed=seed,
    )
    trainer = SFTTrainer(
        model=model, args=sft, train_dataset=train, processing_class=tok, callbacks=callbacks
    )
    trainer.train()
    if select is not None:
        select.restore_best(model)
    model_dir = save_model_with_sids(
        model,
        tok,
        sid_map,
        out / name,
        overwrite=True,
        recommender={
            "prompt_style": PROMPT_STYLE,
            "max_history": cfg.max_items,
            # `recllm eval --data` refuses other data than this split
            "data_fingerprint": data_fingerprint(split, dataset.catalog),
        },
    )
    info = {
        "epochs": round(trainer.state.epoch or 0.0, 2),
        "steps": trainer.state.global_step,
        "stopped_by_budget": budget.stopped_at is not None,
        "final_loss": next(
            (h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None
        ),
        "parameters": model.num_parameters(),
        "best_epoch": select.best_epoch if select else None,
        "valid": [
            {k: round(h[k], 4) for k in ("epoch", "recall@10", "ndcg@10")} for h in select.history
        ]
        if select
        else None,
        "model": asdict(cfg),
        "sid": "one token per item (--item-tokens)" if args.item_tokens else asdict(sid_cfg),
    }
    return model_dir, info


def main() -> None:
    t0 = time.monotonic()
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.data is None:
        raise SystemExit("no Beauty data: pass --data path/to/amazon_p5/beauty")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.eval import plot_recall, save_metrics
    from recllm.eval.run import evaluate_recommender, load_ensemble

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    data_cfg = DataConfig(data_path=str(args.data), max_history=20)
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    test = split.test[: args.eval_users] if args.eval_users else split.test
    rows: dict[str, dict[str, float]] = {}
    info: dict[str, object] = {}

    sasrec = None
    if args.sasrec_minutes > 0:
        from recllm.baselines.sasrec import SASRecConfig, train_sasrec

        t = time.monotonic()
        # Beauty is sparse: SASRec's dropout for sparse data and smaller steps (sasrec_beauty.py)
        cfg = SASRecConfig(time_budget_minutes=args.sasrec_minutes, dropout=0.5, batch_size=64)
        sasrec, history = train_sasrec(split, dataset.catalog, cfg)
        info["sasrec_minutes"] = round((time.monotonic() - t) / 60, 2)
        info["sasrec_epochs"] = len(history)
    elif args.collab_source == "sasrec":
        raise SystemExit("--collab-source sasrec needs SASRec: set --sasrec-minutes > 0")

    t = time.monotonic()
    vectors = None
    if args.collab_source == "sasrec":
        vectors = sasrec_fused_embeddings(args, dataset, split, sasrec, out)
    model_dirs = []
    for seed in range(args.seed, args.seed + args.ensemble):
        model_dir, info[f"recllm_seed{seed}"] = train_recllm(
            args, dataset, split, out, vectors, seed
        )
        model_dirs.append(model_dir)
    info["recllm"] = info[f"recllm_seed{args.seed}"]
    info["recllm_train_minutes"] = round((time.monotonic() - t) / 60, 2)
    models, tok, sid_map, spec = load_ensemble(model_dirs)
    run = dict(beams=args.beams, ks=(5, 10), batch_size=64)
    result = evaluate_recommender(models[0], tok, sid_map, test, spec, dataset.catalog, **run)
    rows[f"recllm SID decoder (beam {args.beams})"] = result.metrics
    info["recllm_eval_minutes"] = round(result.seconds / 60, 2)
    if len(models) > 1:
        result = evaluate_recommender(models, tok, sid_map, test, spec, dataset.catalog, **run)
        rows[f"recllm, {len(models)} decoders (beam {args.beams})"] = result.metrics
        info["recllm_ensemble_eval_minutes"] = round(result.seconds / 60, 2)

    if sasrec is not None:
        from recllm.baselines.sasrec import evaluate_sasrec

        scored = dataclasses.replace(split, test=test)  # the same users as recllm
        rows["SASRec (same run)"] = evaluate_sasrec(sasrec, scored, "test", ks=(5, 10))
    rows.update(PUBLISHED)

    print(
        f"\nAmazon Beauty, test, {len(test)} users, full ranking over {len(dataset.catalog)} "
        f"items, histories <= 20 items, seen items not removed"
    )
    print(table(rows))
    first = next(iter(rows))
    print(
        f"invalid rate {rows[first]['invalid_rate']:.4f}; recllm {info['recllm']['epochs']} "
        f"epochs in {info['recllm_train_minutes']} min, eval {info['recllm_eval_minutes']} min; "
        f"total {(time.monotonic() - t0) / 60:.1f} min"
    )
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    save_metrics(out / "metrics.json", rows, config, dataset="beauty", split="test", info=info)
    plot_recall(out / "recall.png", {k: rows[k] for k in rows}, ks=(5, 10), title="Beauty, test")
    print(f"metrics.json and recall.png in {out}")
    print(
        json.dumps(
            {
                "users": len(test),
                "rows": {
                    name: {
                        c: round(float(fig[c]), 4) for c in (*COLUMNS, "invalid_rate") if c in fig
                    }
                    for name, fig in rows.items()
                },
                "info": info,
                "minutes": round((time.monotonic() - t0) / 60, 2),
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()

"""Benchmark building blocks: the reusable parts of ``scripts/*.py``.

- :mod:`recllm.bench.arms`: train one arm of a comparison with a recipe under ``accelerate
  launch`` (a YAML with overrides, into a folder; done once, redone when its settings change);
- :mod:`recllm.bench.scoring`: score a model on fixed users and cache the figures and every
  user's rank of the target, keyed by the model's files and the scoring settings;
- :mod:`recllm.bench.paired`: per-user paired differences of rows against a base row;
- :mod:`recllm.bench.report`: markdown tables, PNG charts and the machine line of a report;
- :mod:`recllm.bench.machine`: the machine line of a report;
- one module per benchmark holding what its script drives: ``align``, ``think``, ``dialogue``,
  ``benchmark`` (seqlm against SASRec), ``curves`` (learning curves, pretrained vs scratch),
  ``sft_speed`` with ``sft_runs``, ``decode_speed``, ``serve_speed``.

The scripts stay thin drivers: argparse, these functions, printing.
"""

"""Training: thin glue over TRL trainers (the PLUM recipe's stages, LoRA, the from-scratch SID
decoder, checkpoint selection).

Nothing is imported here on purpose: ``import recllm.train`` must stay cheap, and each module
pulls in torch, transformers or TRL only when it is used. Import the modules themselves, e.g.
``from recllm.train.plum import run_plum``. In recllm's layers train sits beside decode, above
data, sid, vocab and tasks, and below eval and apps: it imports neither (``tests/test_layers.py``).
"""

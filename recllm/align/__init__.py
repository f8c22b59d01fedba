"""Alignment after SFT: rewards, constrained beam mining, DPO, advantage-weighted SFT and GRPO.

Above training, decoding, evaluation and the baselines: these stages decode with the policy
(constrained beams and rollouts), score with rewards and a collaborative reward model
(:mod:`recllm.baselines.sasrec`), and train through TRL.
"""

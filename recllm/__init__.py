"""recllm: turn a pretrained LLM into a generative recommender."""

__version__ = "0.1.0.dev0"

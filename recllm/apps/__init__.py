"""Entry points built on the pipeline: the recommendation API and the vLLM server.

- :mod:`recllm.apps.recommender`: :class:`~recllm.apps.recommender.Recommender`, history in,
  ranked catalog items out, on vLLM or transformers.
- :mod:`recllm.apps.serve`: ``recllm serve``, vLLM's OpenAI-compatible server with SID spans
  constrained and a ``/v1/recommend`` endpoint.
"""

from recllm.apps.recommender import Recommender

__all__ = ["Recommender"]

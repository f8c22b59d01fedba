"""Text builders: behaviour, catalog and recommendation tasks rendered from Jinja templates.

The templates ship inside the package (``recllm/prompts/``, :data:`PROMPTS_DIR`); recommendation
prompts for evaluation and serving (:class:`PromptSpec`, :func:`build_prompts`) are built here too,
so training, evaluation and serving read one definition.
"""

from recllm.tasks.builders import ItemView, TaskBuilder, TaskRenderer
from recllm.tasks.config import PROMPTS_DIR, TASKS, TaskConfig, packaged_prompts_dir
from recllm.tasks.prompting import PROMPT_STYLES, PromptSpec, build_prompts

__all__ = [
    "PROMPTS_DIR",
    "PROMPT_STYLES",
    "TASKS",
    "ItemView",
    "PromptSpec",
    "TaskBuilder",
    "TaskConfig",
    "TaskRenderer",
    "build_prompts",
    "packaged_prompts_dir",
]

"""Text builders: behaviour, catalog and recommendation tasks rendered from Jinja templates."""

from recllm.tasks.builders import ItemView, TaskBuilder, TaskRenderer
from recllm.tasks.config import TASKS, TaskConfig

__all__ = ["TASKS", "ItemView", "TaskBuilder", "TaskConfig", "TaskRenderer"]

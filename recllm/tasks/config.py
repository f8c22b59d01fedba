"""TaskConfig: which training texts are built, from which templates, in what mixture."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


def packaged_prompts_dir() -> Path:
    """The templates shipped inside the installed package (``recllm/prompts/``).

    They are package data, so a wheel or a ``pip install .`` carries them exactly as an editable
    clone does. Copy the folder to edit the prompts, then point ``prompts_dir`` at the copy.

    Raises:
        RuntimeError: The package is not installed as plain files (e.g. imported from a zip),
            so Jinja cannot read the templates from a folder.
    """
    folder = resources.files("recllm") / "prompts"
    if not isinstance(folder, Path):  # a zipimport Traversable: no folder on disk to load from
        raise RuntimeError(
            f"recllm is imported from {folder!r}, not from files on disk, so its prompt "
            "templates have no folder; Fix: install recllm as files (pip install recllm) or "
            "set prompts_dir to a copy of the templates"
        )
    return folder


#: The packaged templates' folder (``python -c "import recllm.tasks as t; print(t.PROMPTS_DIR)"``
#: shows where they are, to copy them out for editing). YAML may point ``prompts_dir`` elsewhere.
PROMPTS_DIR = str(packaged_prompts_dir())
#: The former name of :data:`PROMPTS_DIR`.
DEFAULT_PROMPTS_DIR = PROMPTS_DIR

TASKS = (
    "behaviour",
    "catalog_sid_to_title",
    "catalog_title_to_sid",
    "catalog_sid_to_text",
    "rec",
    "rec_sequence",
    "rec_session",
    "reason_rec",
    "dialogue",
)
#: Templates that are no training task: the teacher's rationale and dialogue rewrite requests.
AUXILIARY_TEMPLATES = ("reason_teacher", "dialogue_teacher")
#: Tasks whose rows come from a rationale dataset (``recllm reason generate``), not the split.
RATIONALE_TASKS = ("reason_rec",)
#: Tasks whose rows supervise every SID of the history as well as the target (``history_loss``).
HISTORY_LOSS_TASKS = ("rec_sequence",)


def _default_mixture() -> dict[str, float]:
    return {
        "behaviour": 1.0,
        "catalog_sid_to_title": 1.0,
        "catalog_title_to_sid": 1.0,
        "catalog_sid_to_text": 0.0,
        "rec": 1.0,
        "rec_sequence": 0.0,
        "rec_session": 0.0,
        "reason_rec": 0.0,
        "dialogue": 0.0,
    }


@dataclass
class TaskConfig:
    """Training texts for alignment and recommendation SFT."""

    mixture: dict[str, float] = field(
        default_factory=_default_mixture,
        metadata={
            "help": "Per task, a multiplier on its natural number of examples: 1.0 = every "
            "example once, 0.5 = a seeded random half, 2.0 = every example twice, 0 = off. "
            f"Tasks: {TASKS}."
        },
    )
    prompts_dir: str = field(
        default=PROMPTS_DIR,
        metadata={
            "help": "Folder of the Jinja templates, one <task>.jinja per task (default: the "
            "templates shipped in the package, recllm/prompts/)."
        },
    )
    rec_history_titles: bool = field(
        default=False,
        metadata={
            "help": "Show titles next to the SIDs in recommendation histories (longer prompts)."
        },
    )
    rec_history_markers: bool = field(
        default=True,
        metadata={
            "help": "Write each history SID with its <|sid_begin|>/<|sid_end|> markers, one per "
            "line, as answers are written. False: the code tokens alone, back to back (3 "
            "tokens an item instead of 6 with 3 levels: shorter prompts, faster training and "
            "decoding)."
        },
    )
    behaviour_max_items: int = field(
        default=20,
        metadata={"help": "Items per behaviour text (a window of a training history)."},
    )
    max_title_chars: int = field(
        default=120, metadata={"help": "Titles are cut to this many characters."}
    )
    max_text_chars: int = field(
        default=400, metadata={"help": "Item texts (catalog_sid_to_text) are cut to this length."}
    )
    facet_labels: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "How dialogue turns name the catalog's categorical fields, field -> words "
            "(ml-100k: {class: genre, release_year: year}); unnamed fields show their own name."
        },
    )
    dialogue_per_user: int = field(
        default=2,
        metadata={"help": "dialogue: conversations per training user (its last positions)."},
    )
    dialogue_turns: int = field(
        default=2, metadata={"help": "dialogue: assistant turns per conversation, at most."}
    )
    dialogue_steer: float = field(
        default=0.5,
        metadata={
            "help": "dialogue: share of user turns that steer by text (half by a facet tag of "
            "the wanted item, half 'like X, but with tag'); 0 = never."
        },
    )
    session_length: int = field(
        default=5,
        metadata={
            "help": "rec_session: items in each answer (N SIDs back to back after a history); "
            "slates of this length are what the model learns to write."
        },
    )
    task_seed: int = field(default=0, metadata={"help": "Seed for mixture sampling and shuffling."})

    def __post_init__(self) -> None:
        unknown = set(self.mixture) - set(TASKS)
        if unknown:
            raise ValueError(f"mixture has unknown task(s) {sorted(unknown)}; known: {TASKS}")
        if any(w < 0 for w in self.mixture.values()):
            raise ValueError("mixture weights must be >= 0")
        if self.dialogue_per_user < 1 or self.dialogue_turns < 1:
            raise ValueError("dialogue_per_user and dialogue_turns must be >= 1")
        if not 0.0 <= self.dialogue_steer <= 1.0:
            raise ValueError(f"dialogue_steer must be in [0, 1], got {self.dialogue_steer}")
        if isinstance(self.session_length, bool) or self.session_length < 1:
            raise ValueError(f"session_length must be >= 1, got {self.session_length}")
        if self.behaviour_max_items < 2:
            raise ValueError("behaviour_max_items must be >= 2 (a beginning and a continuation)")

"""The one source of truth for class names and their order in every model output of this project."""

BENIGN = "benign"
MALIGNANT = "malignant"
NORMAL = "normal"
ABNORMAL = "abnormal"

CLASS_NAMES: tuple[str, ...] = (BENIGN, MALIGNANT, NORMAL)
"""BUSI ultrasound classes, in the order of the classifier's output units."""

TASKS: dict[str, tuple[str, ...]] = {
    "three-class": CLASS_NAMES,
    "benign-vs-malignant": (BENIGN, MALIGNANT),
    "normal-vs-abnormal": (NORMAL, ABNORMAL),
}
"""Classification tasks and their output order. Every image carries a finding (normal, benign or malignant);
:func:`task_class` says which output class, if any, it is in a task."""


def task_class(finding: str, task: str) -> str | None:
    """The class of an image with ``finding`` ("normal", "benign", "malignant") in ``task``; None when the task
    leaves such images out (normal images in benign-vs-malignant)."""
    if finding not in CLASS_NAMES:
        raise ValueError(f"unknown finding {finding!r}; expected one of {CLASS_NAMES}")
    if task == "normal-vs-abnormal":
        return NORMAL if finding == NORMAL else ABNORMAL
    classes = TASKS[task]
    return finding if finding in classes else None

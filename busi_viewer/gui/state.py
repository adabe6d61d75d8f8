"""Small immutable state objects the window hands to its widgets (widgets never reach into the model layer).

Each widget has ``set_state(...)`` taking one of these and talks back by Qt signals with typed payloads
(see the widget modules). Keeping them plain dataclasses makes every widget testable in isolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path



@dataclass(frozen=True)
class ResultState:
    """What the result panel shows for the current image.

    ``probabilities`` are the calibrated class probabilities (same order as ``class_names``) or None while
    nothing is known (no model, computing, unreadable image); ``message`` then says why.
    """

    class_names: tuple[str, ...]
    probabilities: tuple[float, ...] | None = None
    predicted: str | None = None
    low_confidence: bool = False
    low_confidence_below: float | None = None
    decision_rule: str = ""  # e.g. "malignant when p(malignant) ≥ 0.19 (chosen on validation)"
    operating_point: tuple[str, float] | None = None  # (class, threshold): a tick on that class's bar
    decision_override: str = ""  # the operating rule decided against the most probable class, in words
    calibrated: bool = False  # probabilities went through the card's temperature
    model_label: str = ""  # "busi-us 0.1.0 · tf_efficientnet_lite0"
    device: str = ""
    seconds: float | None = None
    cached: bool = False
    message: str | None = None
    # Why the image is outside the model's scope (another modality, or its scope guard): the result is then shown
    # as "outside this model's scope", probabilities de-emphasised.
    scope_warning: str = ""
    # The model is computing this image's result: the panel keeps the result's layout with empty bars and
    # ``message`` in place of the prediction, so nothing jumps (and no widget is shown or hidden) per image.
    computing: bool = False

    @property
    def out_of_scope(self) -> bool:
        return bool(self.scope_warning)


@dataclass(frozen=True)
class AgreementState:
    """Heatmap-vs-mask agreement for the current image (only when a lesion mask exists)."""

    iou: float | None
    pointing_hit: bool | None
    energy_in_mask: float | None
    baseline_iou: float | None
    baseline_pointing_hit: bool | None
    baseline_energy_in_mask: float | None
    note: str | None = None  # e.g. "empty mask" when scores are undefined


@dataclass(frozen=True)
class ReviewState:
    """The reviewer's current decision on one image (``decision`` None = not reviewed yet)."""

    class_names: tuple[str, ...]
    decision: str | None = None  # "agree" | "disagree" | "unsure"
    chosen_class: str | None = None  # the reviewer's class when disagreeing
    note: str = ""
    model_version: str = ""


@dataclass(frozen=True)
class ReviewEdit:
    """Payload of ``ReviewPanel.reviewChanged``: the full new review state of the shown image."""

    decision: str | None
    chosen_class: str | None
    note: str


@dataclass(frozen=True)
class ThumbState:
    """One entry of the thumbnail strip."""

    path: Path
    predicted: str | None = None
    out_of_scope: bool = False
    reviewed: bool = False
    unreadable: bool = False
    error: str | None = None

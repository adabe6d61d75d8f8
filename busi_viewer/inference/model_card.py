"""The model card: everything needed to use a set of weights correctly, and to judge its numbers.

It travels with the weights (``model_card.json`` beside ``weights.safetensors``) and drives preprocessing,
so training and the app cannot disagree on class order, input size, resizing or normalisation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from busi_viewer.core.errors import BundleError

# 2: ``test_time_flip`` and ``output_stride``. A card that sets them must not be read by an app that would ignore
# them (it would run another computation than the card's numbers were measured on), so the schema moved on.
CARD_SCHEMA_VERSION = 2
RESIZE_POLICIES = ("stretch", "letterbox", "center_crop")
INTERPOLATIONS = ("bicubic", "bilinear", "area", "nearest")
EQUALISATIONS = ("none", "global", "clahe")


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB uint8 image becomes the network's input tensor.

    ``resize_policy``: "stretch" resizes to input_size x input_size ignoring aspect ratio; "letterbox" keeps
    the aspect ratio and pads with ``pad_value`` (0..255, before normalisation) to a square; "center_crop"
    scales the shorter side to input_size and crops the centre square (the cut-off margins are not seen).
    ``mean``/``std`` apply to pixel values scaled to [0, 1]. ``equalisation`` happens first, on the original
    image: "global" histogram equalisation or "clahe" (contrast-limited, adaptive: ``clahe_clip_limit`` and a
    ``clahe_tiles`` x ``clahe_tiles`` grid), on the grey values, or on the luminance of a colour image.
    """

    input_size: int = 224
    resize_policy: str = "stretch"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pad_value: int = 0
    equalisation: str = "none"
    clahe_clip_limit: float = 2.0
    clahe_tiles: int = 8

    def __post_init__(self) -> None:
        if self.resize_policy not in RESIZE_POLICIES:
            raise BundleError(f"unknown resize policy {self.resize_policy!r}; expected one of {RESIZE_POLICIES}")
        if self.interpolation not in INTERPOLATIONS:
            raise BundleError(f"unknown interpolation {self.interpolation!r}; expected one of {INTERPOLATIONS}")
        if self.input_size < 32:
            raise BundleError(f"input size {self.input_size} is too small (at least 32 pixels)")
        if self.equalisation not in EQUALISATIONS:
            raise BundleError(f"unknown equalisation {self.equalisation!r}; expected one of {EQUALISATIONS}")
        if not self.clahe_clip_limit > 0 or self.clahe_tiles < 1:
            raise BundleError("clahe_clip_limit must be > 0 and clahe_tiles >= 1")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise BundleError("mean and std must have three entries each, std strictly positive")


@dataclass(frozen=True)
class ModelCard:
    """Metadata of a model bundle (see ``docs`` in README: Model bundles)."""

    name: str
    version: str
    architecture: str
    class_names: tuple[str, ...]
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    modality: str = "US"
    weights_sha256: str = ""
    data_manifest_sha256: str = ""
    training_data: str = ""
    protocol: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration_temperature: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)
    low_confidence_below: float = 0.0
    # True: the model is run on the image and on its mirror image and their logits averaged, as its numbers
    # (calibration, threshold, metrics) were measured; the heatmap is then the mean of the two Grad-CAMs.
    test_time_flip: bool = False
    output_stride: int = 32  # the final feature map's stride (architectures.OUTPUT_STRIDES)
    # The scope guard in scope_guard.npz: its file_sha256, threshold, components, what it was fitted and
    # calibrated on, and its flag rates; empty when the bundle has none (busi_viewer.inference.scope).
    scope_guard: dict[str, Any] = field(default_factory=dict)
    intended_use: str = "Research on explainable classification of breast ultrasound. Not for diagnostic use."
    out_of_scope_use: str = "Any clinical decision; images of other modalities, body parts or devices than trained on."
    created: str = ""
    schema_version: int = CARD_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:
            raise BundleError("a model card needs at least two class names")
        if len(set(self.class_names)) != len(self.class_names):
            raise BundleError(f"class names repeat: {self.class_names}")
        if not self.calibration_temperature > 0:
            raise BundleError(f"calibration temperature must be > 0, got {self.calibration_temperature}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def operating_point(self) -> tuple[str, float] | None:
        """(class, threshold) of the card's operating rule: the output class named in ``thresholds``
        ("malignant" for the ultrasound models, "abnormal" for normal-vs-abnormal); None for the arg-max."""
        known = [(name, float(t)) for name, t in self.thresholds.items() if name in self.class_names]
        return known[0] if len(known) == 1 else None

    def decision_rule(self) -> str:
        """The operating rule in words, as the result panel and the reports state it."""
        point = self.operating_point()
        if point is None:
            return "most probable class"
        name, threshold = point
        return f"{name} when p({name}) ≥ {threshold:.2f} (chosen on validation), else the most probable"

    def explanation_name(self) -> str:
        """What the heatmap is called on screen and in exports: plain "Grad-CAM" only when it is one."""
        return "Grad-CAM, mean with mirror image" if self.test_time_flip else "Grad-CAM"

    def to_json(self) -> str:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"model_card.json is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BundleError("model_card.json must hold a JSON object")
        if data.get("schema_version", CARD_SCHEMA_VERSION) > CARD_SCHEMA_VERSION:
            raise BundleError(
                f"model card schema {data['schema_version']} is newer than this app understands "
                f"({CARD_SCHEMA_VERSION}); update BUSI Viewer"
            )
        known = {f.name for f in fields(cls)}
        missing = {"name", "version", "architecture", "class_names"} - data.keys()
        if missing:
            raise BundleError(f"model_card.json lacks required field(s): {', '.join(sorted(missing))}")
        try:
            preprocess = PreprocessSpec(**{k: tuple(v) if isinstance(v, list) else v
                                           for k, v in data.get("preprocess", {}).items()})
            kwargs = {k: v for k, v in data.items() if k in known and k != "preprocess"}
            kwargs["class_names"] = tuple(kwargs["class_names"])
            return cls(preprocess=preprocess, **kwargs)
        except TypeError as exc:
            raise BundleError(f"model_card.json has an unexpected field: {exc}") from exc

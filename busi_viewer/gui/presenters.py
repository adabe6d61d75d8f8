"""Turn worker payloads into the small state objects the widgets show (pure functions, no widgets)."""

from __future__ import annotations

from busi_viewer.core.agreement import AgreementResult
from busi_viewer.core.decision import override_sentence
from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.gui.state import AgreementState, ResultState
from busi_viewer.inference.catalogue import modality_warning, scope_warning
from busi_viewer.gui.worker import InferenceDone, ModelState


def class_names(model: ModelState | None) -> tuple[str, ...]:
    card = model.card if model is not None else None
    return tuple(card.class_names) if card is not None else CLASS_NAMES


def model_label(model: ModelState | None) -> str:
    """"busi-us 0.1.0 · tf_efficientnet_lite0", or "" without a model."""
    card = model.card if model is not None else None
    return f"{card.name} {card.version} · {card.architecture}" if card is not None else ""


def decision_rule(model: ModelState | None) -> str:
    card = model.card if model is not None else None
    return card.decision_rule() if card is not None else ""


def _model_fields(model: ModelState | None) -> dict:
    """What the result panel shows of the model itself, with or without a result: the same for both states, so
    the panel's layout does not change between them."""
    card = model.card if model is not None else None
    return {"model_label": model_label(model), "device": model.device if model else "",
            "decision_rule": decision_rule(model), "operating_point": card.operating_point() if card else None,
            "calibrated": bool(card and card.calibration_temperature != 1.0)}


def pending_result(model: ModelState | None, image_modality: str | None = None) -> ResultState:
    """What the result panel says before the current image's result arrives (``image_modality``: the image's
    DICOM Modality, "OT" for rasters; a model of another known modality is warned about)."""
    if model is None:
        message = "Loading model…"
    elif not model.loaded:
        message = f"No model — plain viewer.\n{model.error}"
    else:
        message = "Computing…"
    return ResultState(class_names=class_names(model), message=message, **_model_fields(model),
                       scope_warning=modality_warning(model.card if model else None, image_modality),
                       computing=bool(model is not None and model.loaded))


def result_state(model: ModelState | None, done: InferenceDone, image_modality: str | None = None) -> ResultState:
    card = model.card if model is not None else None
    prediction = done.prediction
    return ResultState(
        class_names=tuple(prediction.class_names),
        probabilities=tuple(float(p) for p in prediction.probabilities),
        predicted=prediction.predicted_class,
        low_confidence=prediction.low_confidence,
        low_confidence_below=card.low_confidence_below if card else None,
        decision_override=override_sentence(prediction.class_names, prediction.probabilities,
                                            prediction.predicted_class, card.operating_point() if card else None),
        **_model_fields(model),
        seconds=done.seconds,
        cached=done.cached,
        scope_warning=scope_warning(card, image_modality, prediction),
    )


def agreement_state(result: AgreementResult | None) -> AgreementState | None:
    """Otsu IoU, pointing game and energy in mask beside the centre-prior baseline; None without a mask."""
    if result is None:
        return None
    base = result.baseline
    return AgreementState(
        iou=result.iou_otsu, pointing_hit=result.pointing_hit, energy_in_mask=result.energy_in_mask,
        baseline_iou=base.iou_otsu if base else None,
        baseline_pointing_hit=base.pointing_hit if base else None,
        baseline_energy_in_mask=base.energy_in_mask if base else None,
        note=result.reason,
    )

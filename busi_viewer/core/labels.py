"""The one source of truth for class names and their order in every model output of this project."""

CLASS_NAMES: tuple[str, ...] = ("benign", "malignant", "normal")
"""BUSI ultrasound classes, in the order of the classifier's output units."""

MALIGNANT = "malignant"

"""Models, preprocessing and explanations: torch / timm, no Qt."""

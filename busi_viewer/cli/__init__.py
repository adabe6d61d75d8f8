"""Command-line entry points (headless; no Qt)."""

"""Misalignment directions: the `Direction` value, extraction methods, separation metrics, layer sweeps,
projection scoring, and the contrast data they are fitted on."""

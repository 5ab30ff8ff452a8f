"""Checkpoints: safetensors weights + a JSON manifest (never a pickle), the search folders, and the bundled checkpoints (package data in ``bundled/``)."""

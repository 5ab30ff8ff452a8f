"""Evaluation: image metrics, error maps and the tissue-segmentation proxy."""

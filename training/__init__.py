"""Headless training and evaluation of the SuperResMoE checkpoints.

Run ``python -m training --help``.  Training builds on :mod:`SuperResMoELib`
(data, geometry, degradation, networks, checkpoints) and writes checkpoints
in the safetensors + JSON manifest format that the extension loads.
"""

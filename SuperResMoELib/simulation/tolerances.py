"""Numerical tolerances shared by the acquisition simulations."""

from __future__ import annotations

#: Relative tolerance for "spacing exceeds" and "axes are parallel" tests.
RELATIVE_TOLERANCE: float = 1e-6

#: Tolerance (in voxels) when counting how many voxels cover an extent, so an
#: exact multiple does not gain an extra voxel through rounding noise.
COVER_TOLERANCE: float = 1e-6

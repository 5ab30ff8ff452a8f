"""SuperResMoELib: the Qt-free engine of the SuperResMoE 3D Slicer extension.

Mixture-of-experts super-resolution of MRI volumes (SS-MoE, REMIx,
MoEDiff-SR) and the cubic-spline baseline, with geometry-correct I/O,
a patch-wise inference engine, metrics and safe checkpoints.
"""

from SuperResMoELib.core.volume import AcquisitionTable, Grid, Volume

__version__ = "0.1.0"

__all__ = ["AcquisitionTable", "Grid", "Volume", "__version__"]

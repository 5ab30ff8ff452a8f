"""SuperResMoE scripted module for 3D Slicer.

A thin shell over :mod:`SuperResMoELib`.  In this version the module carries
the metadata and help; the library is used from Slicer's Python console and
``Slicer --python-script``::

    from SuperResMoELib.cli import main
    main(["enhance", "-i", "lr.nii.gz", "-o", "sr.nii.gz", "--method", "cubic"])
"""

from __future__ import annotations

import os
import sys

from slicer.ScriptedLoadableModule import ScriptedLoadableModule

_HERE = os.path.dirname(os.path.abspath(__file__))
for _candidate in (_HERE, os.path.dirname(_HERE)):  # installed beside, or the source tree
    if os.path.isdir(os.path.join(_candidate, "SuperResMoELib")) and _candidate not in sys.path:
        sys.path.insert(0, _candidate)


class SuperResMoE(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SuperResMoE"
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["SuperResMoE contributors"]
        self.parent.helpText = (
            "Super-resolution of low-resolution MRI with mixture-of-experts methods "
            "(SS-MoE, REMIx, MoEDiff-SR) and a cubic-spline baseline. "
            "See the <a href='https://github.com/SuperResMoE/SlicerSuperResMoE#readme'>user guide</a>."
        )
        self.parent.acknowledgementText = (
            "Methods: Lin et al. (SS-MoE, MICCAI 2021); Morell-Ortega et al. (REMIx, MIDL 2024); "
            "Wang et al. (MoEDiff-SR). Sample data built from the MNI152 2009 template shipped with nilearn."
        )

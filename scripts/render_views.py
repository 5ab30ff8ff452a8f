"""Render the module's LR | SR | HR + error + expert layout offscreen to a PNG.

The volumes come from a real Enhance run (the same background CLI the module
uses) on a held-out MUDI-like sample volume, degraded x2 through-plane and
super-resolved by the bundled SS-MoE checkpoint.

    python scripts/render_views.py --out Resources/Screenshots/views.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from trame_slicer.core import SlicerApp

    from SuperResMoELib.slicer import mrml
    from SuperResMoELib import sample_data
    from devtools.offscreen import OffscreenViews
    from SuperResMoELib.slicer.logic import EnhanceRequest, EnhanceRun
    from SuperResMoELib.slicer.views import add_color_legend, comparison_contents, fill_views
    from SuperResMoELib.core.volume import Volume

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("Resources/Screenshots/views.png"))
    p.add_argument("--method", default="ssmoe")
    p.add_argument("--size", type=int, default=256, help="pixels per view")
    args = p.parse_args()
    subj = sample_data.mudi_subject(sample_data.MUDI_HELD_OUT)
    row = int(np.nonzero(subj.table.column("b") == 0)[0][0])
    frame = subj.hr([row])
    app = SlicerApp()
    hr = mrml.add_volume_node(app.scene, Volume(np.asarray(frame.array[0]), frame.ijk_to_ras), "qMRI")
    out = EnhanceRun(app.scene, hr, EnhanceRequest(method=args.method, task="aniso", simulate=True, device="cpu"),
                     python=sys.executable).run(wait=True)
    views = OffscreenViews(app, size=(args.size, args.size))
    fill_views(app.scene, comparison_contents(out.nodes["sr"], out.nodes.get("lr"), hr, out.nodes.get("abserr"),
                                              out.nodes.get("routing")))
    if "abserr" in out.nodes:
        add_color_legend(out.nodes["abserr"], "abs. error")
    views.fit()
    print(f"wrote {views.save(args.out)}; metrics: "
          + ", ".join(f"{k} {v:.4g}" for k, v in out.metrics.items() if isinstance(v, float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Benchmark of the patch-wise inference engine, side by side in one run.

Compares, on the same input, the same small 3D SR conv net and the same thread
count:

* ``engine``: :func:`SuperResMoELib.engine.sliding.run_patches` with Gaussian
  blending, for each patch size and overlap asked for (batched);
* ``loop``: the reference-style plain tiling loop (pad the volume to a multiple
  of the patch size, one non-overlapping tile at a time, batch 1, write into a
  preallocated numpy array, crop);
* ``whole``: the whole volume in one predictor call (speed-of-light reference,
  and the quality reference: ``max |diff|`` measures tiling artefacts).

Each configuration runs in its own subprocess so that peak memory (``ru_maxrss``)
belongs to that configuration alone.  See ``benchmarks/README.md``.

    .venv/bin/python benchmarks/bench_engine.py            # full run, CPU
    .venv/bin/python benchmarks/bench_engine.py --quick    # 96^3 smoke run
    .venv/bin/python benchmarks/bench_engine.py --device cuda --out benchmarks/results/engine_cuda.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Output (HR) shape in KJI order: MNI152 1 mm is 197 x 233 x 189 (IJK); with an
#: integer x2 zoom along k the output k extent is even, so 189 becomes 190.
FULL_OUT_SHAPE = (190, 233, 197)
QUICK_OUT_SHAPE = (96, 96, 96)
ZOOM = (2, 1, 1)
WIDTH = 16
SEED = 0


# --------------------------------------------------------------------------- #
# machine description
# --------------------------------------------------------------------------- #
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _machine(device: str, threads: int) -> dict:
    import torch

    info = {
        "cpu": _cpu_model(),
        "cores": _cores(),
        "threads": threads,
        "torch": torch.__version__,
        "device": device,
        "python": platform.python_version(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------- #
# the workload (rebuilt identically in every subprocess)
# --------------------------------------------------------------------------- #
def build_model():
    """3 conv layers, width 16, ReLU, x2 along k by nearest upsampling + conv."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Conv3d(1, WIDTH, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=ZOOM, mode="nearest"),
        nn.Conv3d(WIDTH, WIDTH, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv3d(WIDTH, 1, 3, padding=1),
    )
    return model.eval().float()


def build_input(out_shape: tuple[int, int, int]):
    """Deterministic smooth-ish volume ``(1, K, J, I)`` float32 on the LR grid."""
    import numpy as np

    lr = tuple(n // z for n, z in zip(out_shape, ZOOM))
    k, j, i = np.meshgrid(*(np.linspace(0.0, 1.0, n, dtype=np.float32) for n in lr), indexing="ij")
    vol = np.sin(7 * k) * np.cos(11 * j) + np.sin(13 * i + 5 * k) + 0.5 * k * j
    vol += 0.1 * np.random.default_rng(SEED).standard_normal(lr, dtype=np.float32)
    return vol[None].astype(np.float32)


def _rss_now_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _plain_loop(x, model, patch: int, device):
    """Reference-style tiling: pad to a multiple of ``patch``, tile by tile."""
    import numpy as np
    import torch

    _, K, J, I = x.shape
    pad = [(-n) % patch for n in (K, J, I)]
    xp = np.pad(x, ((0, 0), (0, pad[0]), (0, pad[1]), (0, pad[2])))
    Kp, Jp, Ip = xp.shape[1:]
    zk, zj, zi = ZOOM
    out = np.zeros((1, Kp * zk, Jp * zj, Ip * zi), dtype=np.float32)
    n = 0
    with torch.inference_mode():
        for k in range(0, Kp, patch):
            for j in range(0, Jp, patch):
                for i in range(0, Ip, patch):
                    tile = np.ascontiguousarray(xp[None, :, k:k + patch, j:j + patch, i:i + patch])
                    y = model(torch.from_numpy(tile).to(device))
                    out[:, k * zk:(k + patch) * zk, j * zj:(j + patch) * zj, i * zi:(i + patch) * zi] = \
                        y[0].cpu().numpy()
                    n += 1
    return out[:, :K * zk, :J * zj, :I * zi], n


def run_one(cfg: dict) -> dict:
    """Run one configuration (in a subprocess) and return its measurements."""
    import numpy as np
    import torch

    from SuperResMoELib.engine.sliding import EngineConfig, run_patches

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    cuda = device.type == "cuda"
    x = build_input(tuple(cfg["out_shape"]))
    model = build_model().to(device)
    rss_setup = _rss_now_kib()

    kind = cfg["kind"]
    if kind == "engine":
        ecfg = EngineConfig(patch_size=cfg["patch"], overlap=cfg["overlap"], batch_size=cfg["batch"],
                            mixed_precision=cfg.get("amp", False))

        def work():
            res = run_patches(x, model, ZOOM, ecfg, device=device)
            return res.image, res.n_patches
    elif kind == "loop":
        def work():
            return _plain_loop(x, model, cfg["patch"], device)
    elif kind == "whole":
        def work():
            with torch.inference_mode():
                y = model(torch.from_numpy(x)[None].to(device))
                return y[0].cpu().numpy(), 1
    else:
        raise ValueError(kind)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def warm_up():
        """Build the kernels for the shapes the timed runs use, cheaply: the
        predictor on one (batch and single) patch; the whole volume in full."""
        if cfg["full_warmup"] or kind == "whole":
            work()
            return
        p = cfg["patch"]
        with torch.inference_mode():
            for b in ({1, cfg["batch"]} if kind == "engine" else {1}):
                model(torch.zeros((b, 1, p, p, p), device=device))

    result: dict = {"rss_setup_kib": rss_setup}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        warm_up()
        sync()
        times: list[float] = []
        while len(times) < cfg["repeats"] and (not times or sum(times) < cfg["budget"]):
            sync()
            t0 = time.perf_counter()
            image, n_patches = work()
            sync()
            times.append(time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - reported, e.g. out of memory
        result.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                      peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return result
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        result["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    result.update(times_s=times, best_s=min(times), n_patches=int(n_patches), out_shape=list(image.shape[1:]))
    if cfg.get("save"):
        np.save(cfg["save"], image)
    if cfg.get("reference") and os.path.exists(cfg["reference"]):  # after the peak was read
        ref = np.load(cfg["reference"])
        diff = np.abs(image.astype(np.float64) - ref)
        result.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                      ref_range=float(ref.max() - ref.min()))
    return result


# --------------------------------------------------------------------------- #
# driver
# --------------------------------------------------------------------------- #
def _label(cfg: dict) -> str:
    if cfg["kind"] == "engine":
        amp = ", fp16" if cfg.get("amp") else ""
        return f"engine p{cfg['patch']} ov{cfg['overlap']:g} b{cfg['batch']}{amp}"
    if cfg["kind"] == "loop":
        return f"plain loop p{cfg['patch']} b1"
    return "whole volume"


def _fmt_mib(kib: float | None) -> str:
    return "—" if kib is None else f"{kib / 1024:,.0f}"


def _table(rows: list[dict], cuda: bool) -> str:
    head = ["configuration", "patches", "runs", "best s", "median s", "Mvox/s", "× loop time", "max abs Δ vs whole",
            "mean abs Δ vs whole", "peak RSS MiB", "Δ RSS MiB"]
    if cuda:
        head.append("CUDA max alloc MiB")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        r = row["result"]
        if "error" in r:
            cells = [row["label"], "—", f"failed: {r['error']}"] + ["—"] * (len(head) - 3)
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
            continue
        ratio = row.get("ratio")
        cells = [
            row["label"], str(r["n_patches"]), str(len(r["times_s"])), f"{r['best_s']:.2f}",
            f"{r['median_s']:.2f}", f"{row['mvox_s']:.2f}",
            "—" if ratio is None else f"{ratio:.2f}",
            "—" if "max_abs_diff" not in r else f"{r['max_abs_diff']:.2e}",
            "—" if "mean_abs_diff" not in r else f"{r['mean_abs_diff']:.2e}",
            _fmt_mib(r["peak_rss_kib"]), _fmt_mib(r["peak_rss_kib"] - r["rss_setup_kib"]),
        ]
        if cuda:
            cells.append(f"{r.get('cuda_max_allocated_bytes', 0) / 2**20:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _describe(doc: dict) -> tuple[str, str]:
    m, st = doc["machine"], doc["setup"]
    lr, out = st["lr_shape"], tuple(st["out_shape"])
    header = (f"Engine benchmark — {m['date']} — {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, "
              f"torch {m['torch']}, device {m['device']}" + (f" ({m['gpu']})" if "gpu" in m else ""))
    setup = (f"Input (C,K,J,I) = (1, {lr[0]}, {lr[1]}, {lr[2]}) float32, zoom {tuple(st['zoom'])} → output "
             f"(K,J,I) = {out} = {math.prod(out):,} voxels; predictor: 3 × Conv3d(k3, width {st['width']}), "
             f"ReLU, nearest ×2 upsampling along k; engine batch size {st['batch_size'] or 'auto'}; best of up to "
             f"{st['repeats']} runs"
             + (f" (fewer once a row's runs exceed {st['budget_s']:g} s)" if st.get("budget_s") else "")
             + (", after one full warm-up run." if st["full_warmup"] else
                ", after a warm-up of the predictor on one patch (whole volume: one full run)."))
    return header, setup


def render(doc: dict) -> str:
    """Markdown report of a results document (``machine``, ``setup``, ``rows``)."""
    rows = doc["rows"]
    loops = {row["config"]["patch"]: row["result"].get("best_s") for row in rows if row["config"]["kind"] == "loop"}
    first_patch = next((row["config"]["patch"] for row in rows if row["config"]["kind"] == "loop"), None)
    for row in rows:
        r = row["result"]
        if "best_s" not in r:
            continue
        r["median_s"] = statistics.median(r["times_s"])
        row["mvox_s"] = math.prod(r["out_shape"]) / r["best_s"] / 1e6
        base = loops.get(row["config"].get("patch"), loops.get(first_patch))
        row["ratio"] = r["best_s"] / base if base else None
    ranges = [row["result"]["ref_range"] for row in rows if "ref_range" in row["result"]]
    header, setup = _describe(doc)
    table = _table(rows, doc["machine"]["device"] == "cuda")
    notes = ("`best s` / `median s`: wall time of one call over the whole volume. "
             "`× loop time`: best time / best time of the plain loop with the same patch size (whole volume: "
             f"vs the p{first_patch} loop); >1 = slower. `Δ RSS`: peak RSS minus RSS after building the input and "
             "the model (torch libraries excluded). `abs Δ vs whole`: difference to the whole-volume prediction, "
             "i.e. tiling artefacts"
             + (f" (the whole-volume output spans {ranges[0]:.3g} from min to max)." if ranges else "."))
    return f"{header}\n\n{setup}\n\n{table}\n\n{notes}\n"


def _write(doc: dict, out: Path) -> None:
    md = render(doc)
    doc["markdown"] = md
    print()
    print(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    print(f"written {out} and {out.with_suffix('.json')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", metavar="JSON", help=argparse.SUPPRESS)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=_cores(), help="torch threads for every run (default: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per configuration (best is reported)")
    ap.add_argument("--budget", type=float, default=math.inf,
                    help="stop repeating a configuration once its timed runs exceed this many seconds "
                         "(at least one run; default: no limit)")
    ap.add_argument("--full-warmup", action="store_true",
                    help="warm up with one full untimed run (default: the predictor on one patch per "
                         "batch shape; the whole-volume row always warms up in full)")
    ap.add_argument("--patch-sizes", default="32,64", help="comma-separated LR patch sizes (default 32,64)")
    ap.add_argument("--overlaps", default="0.5,0.25,0", help="comma-separated engine overlaps")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="engine batch size (default: the engine's own, 2 on CPU / 8 on GPU)")
    ap.add_argument("--amp", action="store_true", help="engine rows use float16 autocast (CUDA only)")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-volume reference")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_OUT_SHAPE} output, 1 repeat")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per configuration")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only rebuild the Markdown report (beside it) from a results JSON file")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine_cpu.md")
    args = ap.parse_args(argv)

    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    if args.render:
        _write(json.loads(args.render.read_text()), args.render.with_suffix(".md"))
        return 0

    out_shape = QUICK_OUT_SHAPE if args.quick else FULL_OUT_SHAPE
    repeats = 1 if args.quick and args.repeats == 3 else args.repeats
    patches = [int(p) for p in args.patch_sizes.split(",") if p.strip()]
    overlaps = [float(o) for o in args.overlaps.split(",") if o.strip()]
    common = {"device": args.device, "threads": args.threads, "repeats": repeats, "budget": args.budget,
              "full_warmup": args.full_warmup, "out_shape": list(out_shape)}
    machine = _machine(args.device, args.threads)
    doc = {"machine": machine,
           "setup": {"lr_shape": [n // z for n, z in zip(out_shape, ZOOM)], "out_shape": list(out_shape),
                     "zoom": list(ZOOM), "width": WIDTH, "seed": SEED, "repeats": repeats,
                     "budget_s": args.budget if math.isfinite(args.budget) else None,
                     "full_warmup": args.full_warmup, "batch_size": args.batch_size}}
    header, setup = _describe(doc)
    print(header, flush=True)
    print(setup, flush=True)

    configs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
        ref = os.path.join(tmp, "whole.npy")
        if not args.no_whole:
            configs.append({"kind": "whole", "save": ref})
        for p in patches:
            configs.append({"kind": "loop", "patch": p})
            for o in overlaps:
                from SuperResMoELib.engine.windows import EngineConfig  # torch-free

                batch = EngineConfig(batch_size=args.batch_size).batch_for(args.device)
                configs.append({"kind": "engine", "patch": p, "overlap": o, "batch": batch,
                                "amp": args.amp})
        rows = []
        for cfg in configs:
            cfg = {**common, **cfg, "reference": ref if cfg["kind"] != "whole" else None}
            label = _label(cfg)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", json.dumps(cfg)],
                                      capture_output=True, text=True, timeout=args.timeout, cwd=ROOT, check=False)
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                    res = {"error": f"subprocess exit {proc.returncode}: {tail[0][:200]}"}
                else:
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                res = {"error": f"timeout after {args.timeout:g} s"}
            print(f"  {label:32s} {time.perf_counter() - t0:7.1f} s wall"
                  + (f"  best {res['best_s']:.2f} s" if "best_s" in res else f"  {res.get('error')}"), flush=True)
            cfg.pop("save", None)
            cfg.pop("reference", None)
            rows.append({"label": label, "config": cfg, "result": res})

    doc["rows"] = rows
    _write(doc, args.out)
    return 0

if __name__ == "__main__":
    sys.exit(main())

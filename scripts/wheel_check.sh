#!/usr/bin/env bash
# Wheel check: build the SuperResMoE wheel, install it (not editable) into a
# fresh virtual environment outside the repository, and run it from there.
#
#   bash scripts/wheel_check.sh
#
# Fails unless the wheel holds every bundled checkpoint and training config of
# the source tree, `superresmoe info` finds the checkpoints inside the venv's
# site-packages (not the repository), the training configs are readable through
# importlib.resources, and one `superresmoe enhance --method remix` works.
# Everything happens in a `mktemp -d` folder, removed on exit; the repository is
# not written to (the wheel is built from a copy of its files).
#
# Environment:
#   SUPERRESMOE_TORCH  pip requirement for torch, installed before the wheel
#                      (default: torch==2.13.0, a CPU build here)
#   PYTHON             interpreter for the build and the venv (default: the
#                      repository's .venv/bin/python when it exists, else python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/pip_install.sh
source scripts/pip_install.sh
repo="$(pwd -P)"
start=$(date +%s)
torch_req="${SUPERRESMOE_TORCH:-torch==2.13.0}"
if [ -n "${PYTHON:-}" ]; then
  python="$PYTHON"
elif [ -x "$repo/.venv/bin/python" ]; then
  python="$repo/.venv/bin/python"
else
  python=python3
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/superresmoe-wheel.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
case "$tmp/" in "$repo"/*) echo "[wheel] FAIL: temporary folder $tmp is inside the repository" >&2; exit 1 ;; esac
fail() { echo "[wheel] FAIL: $*" >&2; exit 1; }

# --- build from a copy of the source (tracked + untracked, not ignored), so a
# stale build/ or egg-info in the repository cannot leak into the wheel
src="$tmp/src"
mkdir -p "$src"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 -r sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' _) \
    | (cd "$repo" && tar --null -T - -cf -) | tar -xf - -C "$src"
else
  tar -C "$repo" --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude=__pycache__ -cf - . | tar -xf - -C "$src"
fi

echo "[wheel] building the wheel ($("$python" --version 2>&1))"
pip_quiet=(--disable-pip-version-check -q)
build_flags=()
# the build venv's own setuptools when it is new enough (no download), else pip's isolated build
if "$python" - <<'PY' 2>/dev/null; then build_flags=(--no-build-isolation); fi
import setuptools, sys
sys.exit(0 if int(setuptools.__version__.split(".")[0]) >= 68 else 1)
PY
"$python" -m pip "${pip_quiet[@]}" wheel --no-deps "${build_flags[@]}" -w "$tmp/dist" "$src"
wheels=("$tmp"/dist/superresmoe-*.whl)
[ -f "${wheels[0]}" ] && [ ${#wheels[@]} -eq 1 ] || fail "expected one superresmoe wheel in $tmp/dist"
wheel="${wheels[0]}"
echo "[wheel] built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"

# --- the wheel must hold exactly the bundled checkpoints and training configs of the source
"$python" - "$wheel" "$src" <<'PY'
import sys, zipfile
from pathlib import Path

wheel, src = sys.argv[1], Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
groups = {
    "bundled checkpoint files": ("SuperResMoELib/checkpoints/bundled", ("*.safetensors", "*.json")),
    "training configs": ("training/configs", ("*.json",)),
}
ok = True
for label, (folder, patterns) in groups.items():
    want = {p.relative_to(src).as_posix() for pat in patterns for p in (src / folder).glob(pat)}
    have = {n for n in names if n.startswith(folder + "/") and any(Path(n).match(pat) for pat in patterns)}
    print(f"[wheel] contents: {len(have)} {label} (source has {len(want)}) under {folder}/")
    for n in sorted(have):
        print(f"[wheel]   {n}")
    if not want:
        print(f"[wheel] FAIL: no {label} in the source tree", file=sys.stderr); ok = False
    if want - have:
        print(f"[wheel] FAIL: missing from the wheel: {sorted(want - have)}", file=sys.stderr); ok = False
    if have - want:
        print(f"[wheel] FAIL: in the wheel but not in the source: {sorted(have - want)}", file=sys.stderr); ok = False
for must in ("SuperResMoELib/__init__.py", "SuperResMoELib/app/cli.py", "training/__init__.py"):
    if must not in names:
        print(f"[wheel] FAIL: {must} missing from the wheel", file=sys.stderr); ok = False
sys.exit(0 if ok else 1)
PY

# --- a fresh venv outside the repository: torch first, then the wheel (not editable)
venv="$tmp/venv"
echo "[wheel] creating a fresh venv in $venv"
"$python" -m venv "$venv"
vpy="$venv/bin/python"
echo "[wheel] installing $torch_req, then the wheel"
pip_install "$vpy" "$torch_req"
pip_install "$vpy" "$wheel"

# --- run from the temporary folder: the repository is not on sys.path
work="$tmp/work"
mkdir -p "$work" "$tmp/cache"
cd "$work"
unset PYTHONPATH SUPERRESMOE_CHECKPOINTS
export PYTHONNOUSERSITE=1 SUPERRESMOE_CACHE="$tmp/cache"
site="$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

echo "[wheel] superresmoe info (from $work)"
"$venv/bin/superresmoe" info
"$venv/bin/superresmoe" info --json > info.json
"$vpy" -m SuperResMoELib --help > /dev/null || fail "python -m SuperResMoELib --help"
"$vpy" - info.json "$site" "$repo" "$wheel" <<'PY'
import json, sys, zipfile
from pathlib import Path

import SuperResMoELib

info, site, repo, wheel = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve(), sys.argv[4]
bundled = site / "SuperResMoELib" / "checkpoints" / "bundled"
pkg = Path(SuperResMoELib.__file__).resolve()
assert pkg.is_relative_to(site), f"SuperResMoELib imported from {pkg}, not from {site}"
cks = info["checkpoints"]
n_weights = sum(1 for n in zipfile.ZipFile(wheel).namelist()
                if n.startswith("SuperResMoELib/checkpoints/bundled/") and n.endswith(".safetensors"))
assert len(cks) == n_weights, f"info lists {len(cks)} checkpoints, the wheel bundles {n_weights}"
for c in cks:
    p = Path(c["path"]).resolve()
    assert not p.is_relative_to(repo), f"checkpoint {p} is in the repository"
    assert p.is_relative_to(bundled), f"checkpoint {p} is not in {bundled}"
    assert p.is_file(), f"checkpoint {p} does not exist"
methods = sorted({c["method"] for c in cks})
assert "remix" in methods, f"no remix checkpoint listed: {methods}"
print(f"[wheel] info: {len(cks)} checkpoints ({', '.join(methods)}) in {bundled}")
PY

echo "[wheel] training configs through importlib.resources"
"$vpy" - "$site" "$repo" <<'PY'
import importlib.resources as r, json, sys
from pathlib import Path

import training
import training.config

site, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
configs = sorted((e.name, e) for e in (r.files("training") / "configs").iterdir() if e.name.endswith(".json"))
assert configs, "no training configs found through importlib.resources"
for name, entry in configs:
    json.loads(entry.read_text())
    print(f"[wheel]   training/configs/{name}")
where = Path(training.config.CONFIG_DIR).resolve()
assert where.is_relative_to(site) and not where.is_relative_to(repo), f"training configs read from {where}"
print(f"[wheel] training: {len(configs)} configs in {where}")
PY

echo "[wheel] superresmoe enhance --method remix on a small volume"
"$vpy" - <<'PY'
import nibabel as nib, numpy as np
from scipy.ndimage import gaussian_filter

rng = np.random.default_rng(0)
vol = gaussian_filter(rng.random((40, 40, 12)), 2).astype(np.float32) * 1000
nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 4.0, 1.0])), "small.nii.gz")
PY
"$venv/bin/superresmoe" enhance -i small.nii.gz -o out.nii.gz --method remix --device cpu --progress none \
  2>&1 | tee enhance.log
"$vpy" - <<'PY'
import re
from pathlib import Path

import nibabel as nib, numpy as np

out = Path("out.nii.gz")
assert out.is_file(), "enhance wrote no out.nii.gz"
img = nib.load(out)
zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
assert np.allclose(zooms, 1.0, atol=1e-3), f"output spacing {zooms}, not 1 mm isotropic"
data = np.asarray(img.dataobj)
assert np.isfinite(data).all(), "output has non-finite values"
log = Path("enhance.log").read_text()
m = re.search(r"expert \d+", log)
assert m, f"the printed reason names no expert:\n{log}"
print(f"[wheel] enhance: {out} {data.shape} at {'x'.join(f'{z:g}' for z in zooms)} mm, {m.group(0)}")
PY

echo "[wheel] ok: $(basename "$wheel") installed outside the repository works ($(( $(date +%s) - start )) s)"

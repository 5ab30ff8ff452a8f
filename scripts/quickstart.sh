#!/usr/bin/env bash
# SuperResMoE quick start: set up a virtual environment (idempotent) and run
# the demo, the test suite, or nothing more.
#
#   bash scripts/quickstart.sh demo [superresmoe demo options]
#   bash scripts/quickstart.sh test [pytest options]
#   bash scripts/quickstart.sh setup
#
# Environment:
#   SUPERRESMOE_VENV   virtual environment folder (default: .venv in the repository)
#   SUPERRESMOE_TORCH  pip requirement for torch when none is installed yet
#                      (default: torch==2.13.0, a CPU build here). GPU users: install
#                      a CUDA build into the venv first, it is kept (see README).
#   SUPERRESMOE_TEST_WORKERS  pytest-xdist workers for `test` (default 2; 0: one process)
#   PYTHON             interpreter used to create the venv (default: python3, >= 3.10)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
action="${1:-setup}"
[ $# -gt 0 ] && shift

venv="${SUPERRESMOE_VENV:-.venv}"
python="${PYTHON:-python3}"
torch_req="${SUPERRESMOE_TORCH:-torch==2.13.0}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"SuperResMoE needs Python >= 3.10, found {sys.version.split()[0]}; set PYTHON=python3.x")
PY
  echo "[quickstart] creating $venv"
  "$python" -m venv "$venv"
fi
# shellcheck source=scripts/pip_install.sh
source scripts/pip_install.sh

# torch first, so nothing else pulls a multi-GB CUDA build by accident
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "[quickstart] installing $torch_req"
  pip_install "$venv/bin/python" "$torch_req"
fi

stamp="$venv/.superresmoe-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || \
   ! "$venv/bin/python" -c "import SuperResMoELib, training, pytest, xdist, matplotlib" 2>/dev/null; then
  echo "[quickstart] installing SuperResMoE (editable) with all its extras (test, training, bench, cluster)"
  pip_install "$venv/bin/python" -e ".[all]"
  echo "$want" > "$stamp"
fi

case "$action" in
  demo)  exec "$venv/bin/superresmoe" demo "$@" ;;
  test)  # test files in parallel worker processes (pytest-xdist); SUPERRESMOE_TEST_WORKERS=0: one process
         workers="${SUPERRESMOE_TEST_WORKERS:-2}"
         if [ "$workers" = "0" ]; then exec "$venv/bin/python" -m pytest "$@"; fi
         exec "$venv/bin/python" -m pytest -n "$workers" --dist loadfile "$@" ;;
  setup) echo "[quickstart] ready: $venv/bin/superresmoe, $venv/bin/python -m training" ;;
  *)     echo "usage: $0 {demo|test|setup} [options]" >&2; exit 2 ;;
esac

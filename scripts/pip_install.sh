# Sourced by quickstart.sh and wheel_check.sh: one pip install that survives a
# dropped connection to the package index.
#
#   pip_install PYTHON [pip install arguments...]
#
# pip's own --retries covers failed connections; a read that breaks halfway
# through a download (a truncated wheel) makes pip exit, so the whole install is
# tried again, up to SUPERRESMOE_PIP_ATTEMPTS times (default 3), waiting 10 s,
# then 20 s. Packages already installed are not downloaded again.
pip_install() {
  local py="$1"; shift
  local attempts="${SUPERRESMOE_PIP_ATTEMPTS:-3}" n=1
  while true; do
    if "$py" -m pip --disable-pip-version-check -q install --retries 10 "$@"; then
      return 0
    fi
    if [ "$n" -ge "$attempts" ]; then
      echo "[pip] install $* failed $n times; giving up" >&2
      return 1
    fi
    echo "[pip] install $* failed (attempt $n of $attempts); retrying in $((10 * n)) s" >&2
    sleep $((10 * n))
    n=$((n + 1))
  done
}

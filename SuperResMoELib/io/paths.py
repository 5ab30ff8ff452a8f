"""Where the library keeps per-user files."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the user cache folder.
ENV_CACHE = "SUPERRESMOE_CACHE"


def user_cache_dir(create: bool = False) -> Path:
    """``$SUPERRESMOE_CACHE``, else ``$XDG_CACHE_HOME/superresmoe``, else
    ``~/.cache/superresmoe`` (created when ``create`` is true)."""
    env = os.environ.get(ENV_CACHE)
    if env:
        path = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "superresmoe"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path

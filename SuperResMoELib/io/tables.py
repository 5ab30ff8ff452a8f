"""Small tables of results: CSV files (written atomically) and Markdown."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from SuperResMoELib.io.atomic import write_text_atomic


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Rows (dicts) as CSV; the columns are the union of the keys, in first-seen order."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def append_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> int:
    """Append ``rows`` to the CSV at ``path`` (created when missing); columns
    are the union of the old and new keys.  The file is rewritten atomically,
    so a crash leaves either the old or the new table.  Returns the row count."""
    path = Path(path)
    old: list[dict[str, Any]] = []
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            old = list(csv.DictReader(fh))
    write_csv([*old, *rows], path)
    return len(old) + len(rows)


def markdown_table(rows: Sequence[dict[str, Any]], keys: Sequence[str], fmt: str = "{:.4g}") -> str:
    """A Markdown table of ``keys`` columns; floats formatted with ``fmt``."""
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
    body = "".join("| " + " | ".join(fmt.format(r[k]) if isinstance(r.get(k), float) else str(r.get(k, ""))
                                     for k in keys) + " |\n" for r in rows)
    return head + body


def flatten(d: dict[str, Any], sep: str = "_", numeric_only: bool = False, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level (``{"a": {"b": 1}}`` -> ``{"a_b": 1}``); keeps
    numbers and strings (numbers only with ``numeric_only``; booleans never)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, sep, numeric_only, f"{prefix}{k}{sep}"))
        elif isinstance(v, bool):
            continue
        elif isinstance(v, (int, float)) or (isinstance(v, str) and not numeric_only):
            out[f"{prefix}{k}"] = v
    return out

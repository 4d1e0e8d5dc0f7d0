"""``result.json``: one machine-readable file per suite (an ``ablation`` suite or an ``eval``).

Written from the records by :func:`clip2video.report.tables.regenerate`, so every path that makes
tables makes it too. It holds what a reader needs to cite and compare a result: the package
version, the date, the fingerprint (platform, code, data; each row's settings digest), each
row's evaluated checkpoint with its sha256, and every metric's mean, std, 95% interval and
per-seed values. ``clip2video build`` merges several of them into one table.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clip2video.errors import Clip2VideoError
from clip2video.fileio import atomic_write_text

RESULT_FILE = "result.json"
RESULT_FORMAT = "clip2video-result/1"
PACKAGE = "clip2video-bench"
_CHUNK = 1 << 20


class ResultFileError(Clip2VideoError):
    """A result file cannot be read (missing, not JSON, or not a clip2video result)."""


def sha256_file(path: str | Path) -> str:
    """The full hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def checkpoint_of(record: Any) -> dict[str, Any] | None:
    """The weights a row was evaluated with, with their full sha256: the ``--checkpoint`` file of an
    evaluated row, or the row's own ``checkpoints/last.pt`` (``best.pt`` where an epoch was selected)
    of a trained one. ``sha256`` is None when the file is gone, or when it no longer matches the
    digest the row recorded (``changed``). None for zero-shot rows."""
    row = record.config.get("row") if isinstance(record.config.get("row"), dict) else {}
    given = row.get("checkpoint") or record.extra.get("checkpoint")
    recorded = None
    if isinstance(given, dict):  # the runner records {"path", "sha256" (16 hex digits)}
        given, recorded = given.get("path"), given.get("sha256")
    if given:
        path, role = Path(str(given)), "evaluated"
    elif record.extra.get("trained") and record.path is not None:
        best = record.path / "checkpoints" / "best.pt"
        selected = record.extra.get("selected_on") not in (None, "final")
        path = best if selected and best.is_file() else record.path / "checkpoints" / "last.pt"
        role = "trained"
    else:
        return None
    out: dict[str, Any] = {"path": str(path), "role": role, "sha256": None}
    if not path.is_file():
        out["missing"] = True
        return out
    full = sha256_file(path)
    if recorded and not full.startswith(str(recorded)):
        out["changed"] = True  # the file was replaced after the run: its hash is not the evaluated one
        out["recorded_sha256_prefix"] = recorded
        return out
    out["sha256"] = full
    return out


def runs_label(group: Any) -> str:
    """The ``seeds`` column: the seeds (``0,1,2``), or for a row run once ``1 checkpoint`` (an
    evaluated checkpoint), ``zero-shot`` (pretrained weights, no training) or ``seed N``."""
    if len(group.records) > 1:
        return ",".join("?" if s is None else str(s) for s in group.seeds)
    rec = group.first
    row = rec.config.get("row") if isinstance(rec.config.get("row"), dict) else {}
    if row.get("checkpoint") or rec.extra.get("checkpoint"):
        return "1 checkpoint"
    if rec.extra.get("trained") is False:
        return "zero-shot"
    return "?" if rec.seed is None else f"seed {rec.seed}"


def result_payload(table: Any, *, records_dir: str | Path | None = None) -> dict[str, Any]:
    """The ``result.json`` content of a :class:`~clip2video.report.tables.SuiteTable`."""
    from clip2video import __version__

    values = table.values
    summary = values[values.seed == "mean"] if not values.empty else values
    first = table.groups[0].first if table.groups else None
    rows = []
    for group in table.groups:
        lines = summary[summary.row == group.label]
        metrics: dict[str, Any] = {}
        for _, line in lines.iterrows():
            seeds = values[
                (values.row == group.label) & (values.metric == line.metric) & (values.seed != "mean")
            ]
            metrics[str(line.metric)] = {
                "mean": _number(line.value),
                "std": _number(line.get("std")),
                "lo": _number(line.get("lo")),
                "hi": _number(line.get("hi")),
                "per_seed": [_number(v) for v in seeds.value],
            }
        rows.append(
            {
                "row": group.label,
                "model": group.model,
                "postprocess": group.postprocess,
                "runs": runs_label(group),
                "seeds": [r.seed for r in group.records],
                "records": [r.name for r in group.records],
                "checkpoints": [checkpoint_of(r) for r in group.records],
                "fingerprint": group.first.fingerprint,
                "metrics": metrics,
            }
        )
    fingerprint = {k: v for k, v in (first.fingerprint if first else {}).items() if k != "settings"}
    return {
        "format": RESULT_FORMAT,
        "suite": table.suite,
        "protocol": table.protocol,
        "date": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "package": {"name": PACKAGE, "version": __version__},
        "fingerprint": fingerprint,
        "tie_policy": first.tie_policy if first else None,
        "records": None if records_dir is None else str(Path(records_dir) / table.suite),
        "rows": rows,
        "notes": list(table.footnotes),
    }


def write_result_file(table: Any, out_dir: str | Path, *, records_dir: str | Path | None = None) -> Path:
    """``out_dir/result.json`` (atomically)."""
    path = Path(out_dir) / RESULT_FILE
    payload = result_payload(table, records_dir=records_dir)
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def read_result_file(path: str | Path) -> dict[str, Any]:
    """A ``result.json`` (or a results folder holding one); ResultFileError naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultFileError(
            f"{path}: file does not exist; pass a result.json (results/<suite>/result.json)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: not a readable JSON result file ({exc})") from exc
    if (
        not isinstance(data, dict)
        or data.get("format") != RESULT_FORMAT
        or not isinstance(data.get("rows"), list)
    ):
        raise ResultFileError(
            f"{path}: not a clip2video result file (format {RESULT_FORMAT!r}); regenerate it with `clip2video tables`"
        )
    return data

"""The metric-drift gate: compare a suite's metrics with a locked baseline (``baselines/locked/*.json``).

Rule:
- ``exact`` (deterministic CPU runs, the default when the run's device is the CPU): every locked
  metric must match within an absolute 1e-9.
- ``interval`` (GPU runs, whose kernels are not bit-reproducible): a metric drifts when its new
  value falls outside the locked run's 95% bootstrap interval (over queries) for that metric;
  metrics without a locked interval (tie counts, order accuracy) are not checked in this mode.
A model or metric in the baseline that the new run lacks, or a model the baseline lacks, is drift.
Relocking is explicit: ``clip2video drift --update --message "why"`` stores the message, the date,
the git commit and the command in the baseline file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip2video.engine.records import RunRecord
from clip2video.errors import Clip2VideoError
from clip2video.metrics.bootstrap import bootstrap_ci

EXACT_TOLERANCE = 1e-9
MODES = ("exact", "interval")
LOCK_VERSION = 1


class DriftError(Clip2VideoError):
    """A locked baseline is missing or malformed, or the gate was misused."""


@dataclass(frozen=True)
class Drift:
    """One metric that moved (or is missing): the locked and new values and the tolerance applied."""

    model: str
    metric: str
    locked: float | None
    new: float | None
    tolerance: str

    def __str__(self) -> str:
        locked = "absent" if self.locked is None else repr(self.locked)
        new = "absent" if self.new is None else repr(self.new)
        return f"{self.model}/{self.metric}: locked {locked}, new {new}, tolerance {self.tolerance}"


def _models(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"models": {...}}`` (a baseline file) or the models mapping itself."""
    models = data.get("models", data)
    if not isinstance(models, dict):
        raise DriftError("metrics must be {model: {'metrics': {...}, 'intervals': {...}}}")
    return models


def compare(locked: dict[str, Any], new: dict[str, Any], *, mode: str = "exact") -> list[Drift]:
    """Every locked metric that moved beyond the mode's tolerance, or is missing, in ``new``."""
    if mode not in MODES:
        raise DriftError(f"drift mode {mode!r}: expected one of {', '.join(MODES)}")
    old_models, new_models = _models(locked), _models(new)
    drifts: list[Drift] = []
    for model, old in old_models.items():
        if model not in new_models:
            drifts.append(Drift(model, "(model)", None, None, "model missing from the new run"))
            continue
        new_metrics = new_models[model].get("metrics", {})
        intervals = old.get("intervals", {})
        for metric, raw in old.get("metrics", {}).items():
            value = float(raw)
            if metric not in new_metrics:
                drifts.append(Drift(model, metric, value, None, "metric missing from the new run"))
                continue
            got = float(new_metrics[metric])
            if mode == "exact" or metric not in intervals:
                if mode == "interval":
                    continue
                tol = f"exact (|new - locked| <= {EXACT_TOLERANCE:g})"
                if not (abs(got - value) <= EXACT_TOLERANCE) and not (math.isnan(got) and math.isnan(value)):
                    drifts.append(Drift(model, metric, value, got, tol))
            else:
                lo, hi = (float(x) for x in intervals[metric])
                if not lo <= got <= hi:
                    drifts.append(Drift(model, metric, value, got, f"locked 95% interval [{lo:g}, {hi:g}]"))
    for model in new_models:
        if model not in old_models:
            drifts.append(
                Drift(model, "(model)", None, None, "model not in the baseline: relock with --update")
            )
    return drifts


def suite_metrics(
    records: list[RunRecord], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """``{row: {"metrics": {...}, "intervals": {...}}}`` from a suite's records (order_acc included)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        metrics = dict(rec.metrics)
        if "order_acc" in rec.extra:
            metrics["order_acc"] = float(rec.extra["order_acc"])
        ci = bootstrap_ci(rec, n_boot=n_boot, seed=seed)
        out[rec.name] = {"metrics": metrics, "intervals": {k: list(v) for k, v in ci.items()}}
    return out


def default_mode(records: list[RunRecord]) -> str:
    """``interval`` when any row ran on a GPU (``device`` in its record or config), else ``exact``."""
    for rec in records:
        device = str(rec.extra.get("device") or rec.config.get("device") or "cpu")
        if not device.startswith("cpu"):
            return "interval"
    return "exact"


def load_locked(path: str | Path) -> dict[str, Any]:
    """A locked baseline file."""
    path = Path(path)
    if not path.is_file():
        raise DriftError(
            f"no locked baseline at {path}: run the suite, then lock it with "
            f'`clip2video drift --suite <name> --update --message "why"`'
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DriftError(f"{path} is not valid JSON ({exc}); relock it with --update") from exc
    if not isinstance(data.get("models"), dict):
        raise DriftError(f"{path} has no 'models' mapping; relock it with --update")
    return data


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_locked(
    path: str | Path,
    metrics: dict[str, dict[str, Any]],
    message: str,
    *,
    suite: str = "",
    mode: str = "exact",
    command: str | None = None,
    n_boot: int | None = None,
) -> Path:
    """Lock ``metrics`` (``suite_metrics`` output) with the reason; stores date, commit and command."""
    if not message or not message.strip():
        raise DriftError('relocking a baseline needs a message saying why (--message "...")')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "version": LOCK_VERSION,
        "suite": suite,
        "message": message.strip(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "command": command if command is not None else " ".join(["clip2video", *sys.argv[1:]]),
        "mode": mode,
        "n_boot": n_boot,
        "models": metrics,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path

"""MLflow from the on-disk records: the parent process logs each finished row; ``clip2video sync``
re-logs the records MLflow is missing.

Workers never touch MLflow. A row's run is built from its record alone: params (every resolved
setting the row ran with: ``protocol``, ``backbone.*``, ``model.*`` (every model option),
``frames.*``, ``text.*``, ``train.*``, ``eval.*``, ``data.*``, the built model's ``model_config.*``,
plus ``model``, ``seed``, ``backbone`` and ``weights``), final metrics (point values; the suite's
run carries each row's mean and interval) with ``order_acc`` and ``order_changed_share``, the
per-epoch history at its optimizer steps and wall-clock times, the row's real start and end time,
and the record's files as artifacts. Each run carries the tags ``clip2video.record``
(``<suite>/<row>``) and ``clip2video.record_id`` (a digest of the record's ``metrics.json``), so
logging the same record twice is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from clip2video.engine.records import METRICS_FILE, RecordError, read_run_record, read_suite_info
from clip2video.engine.train import WALL_CLOCK
from clip2video.fingerprint import file_digest
from clip2video.tracking import (
    RECORD_ID_TAG,
    RECORD_TAG,
    NullTracker,
    Tracker,
    TrackingError,
    create_tracker,
    flatten,
    untracked_warning,
)

# Record config sections that are not row params (the row's own values are params of their own).
NOT_PARAMS = ("row", "run")
EXTRA_METRICS = ("order_acc", "order_changed_share", "order_ties", "order_queries")


def record_id(row_dir: Path) -> str:
    """The identity of a record on disk (its ``metrics.json`` content)."""
    return file_digest(Path(row_dir) / METRICS_FILE)


def row_params(record: Any) -> dict[str, str]:
    """A record's resolved hyperparameters as flat MLflow params."""
    config = record.config or {}
    params = flatten({k: v for k, v in config.items() if isinstance(v, dict) and k not in NOT_PARAMS})
    backbone = config.get("backbone") if isinstance(config.get("backbone"), dict) else {}
    params["model"] = str(record.extra.get("model", record.name))
    params["row"] = str(record.extra.get("row", params["model"]))
    params["seed"] = str(record.extra.get("seed", ""))
    params["protocol"] = str(record.protocol or config.get("protocol", ""))
    params["backbone"] = str(backbone.get("clip", ""))
    params["weights"] = _weights_source(config, backbone)
    params["threads"] = str(record.extra.get("threads", (config.get("run") or {}).get("threads", "")))
    params["device"] = str(record.extra.get("device", ""))
    if record.postprocess:
        params["postprocess"] = record.postprocess
    return params


def _weights_source(config: dict[str, Any], backbone: dict[str, Any]) -> str:
    """Where the row's weights came from: its checkpoint, else the backbone's (``none``: from scratch)."""
    row = config.get("row") if isinstance(config.get("row"), dict) else {}
    checkpoint = row.get("checkpoint")
    if isinstance(checkpoint, dict):
        checkpoint = checkpoint.get("path")
    if checkpoint:
        return f"checkpoint {checkpoint}"
    weights = backbone.get("clip_weights")
    return "none (from scratch)" if weights in (None, "", "none") else str(weights)


def wall_clock(entry: dict[str, Any]) -> tuple[float | None, float | None]:
    """(start, end) Unix seconds of a record's or a history entry's wall-clock times (None: unknown)."""
    times = entry.get(WALL_CLOCK) if isinstance(entry, dict) else None
    if not isinstance(times, dict):
        return None, None
    return times.get("start"), times.get("end")


def row_metrics(record: Any) -> dict[str, float]:
    """Final point metrics, the order metrics and the reversal diagnostics of a record."""
    out = {k: float(v) for k, v in record.metrics.items()}
    for key in EXTRA_METRICS:
        value = record.extra.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    for key, value in (record.extra.get("time_reversal") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[f"reversal/{key}"] = float(value)
    return out


def row_history(record: Any) -> list[tuple[str, float, int, float | None]]:
    """(key, value, optimizer step, wall-clock end of the epoch) for each epoch of the record's
    training history (the time is None in records written before it was kept)."""
    steps: list[tuple[str, float, int, float | None]] = []
    for epoch in record.extra.get("history") or []:
        step = int(epoch.get("step", epoch.get("epoch", 0)))
        at = wall_clock(epoch)[1]
        steps.append(("train/epoch_loss", float(epoch["loss"]), step, at))
        if "lr" in epoch:
            steps.append(("train/lr", float(epoch["lr"]), step, at))
        steps.extend((f"val/{k}", float(v), step, at) for k, v in (epoch.get("val") or {}).items())
    return steps


def log_row(
    tracker: Tracker | NullTracker, suite: str, row_dir: Path, suite_run: str | None = None
) -> str | None:
    """Log one record as a finished MLflow run (skipped when a run with its record id exists).

    Row runs are top-level runs (the UI lists them without expanding a parent), tagged with
    the suite run that produced them (``clip2video.suite_run``).
    """
    rid = record_id(row_dir)
    if tracker.find_runs(RECORD_ID_TAG, rid):
        return None
    record = read_run_record(row_dir)
    artifacts = sorted(p for p in Path(row_dir).iterdir() if p.is_file() and p.suffix in (".json", ".npz"))
    tags = {
        RECORD_TAG: f"{suite}/{record.name}",
        RECORD_ID_TAG: rid,
        "model": str(record.extra.get("model", record.name)),
        "row": str(record.extra.get("row", record.extra.get("model", record.name))),
        "seed": str(record.extra.get("seed", "")),
    }
    if suite_run is not None:
        tags["clip2video.suite_run"] = suite_run
    start, end = wall_clock(record.extra)
    return tracker.log_finished_run(
        record.name,
        tags=tags,
        params=row_params(record),
        metrics=row_metrics(record),
        steps=row_history(record),
        artifacts=artifacts,
        start_time=start,
        end_time=end,
    )


class RowLogger:
    """The suite's MLflow run, and one run per finished row, logged from its record.

    Used as a context manager around the rows: the parent run ends FINISHED, FAILED (an error)
    or KILLED (Ctrl-C); a failed row gets a FAILED run naming the error. A store that cannot be
    used is one ``TrackingError`` line, or with ``optional`` (``--tracking optional``) a warning,
    and the rows run untracked.
    """

    def __init__(
        self,
        suite: Any,
        runs_dir: Path,
        *,
        tracking_uri: str | None,
        enabled: bool,
        optional: bool = False,
    ) -> None:
        self.suite = suite
        self.runs_dir = Path(runs_dir)
        try:
            self.tracker = create_tracker(tracking_uri, enabled=enabled)  # checks the store first
        except TrackingError as exc:
            if not optional:
                raise
            untracked_warning(exc)
            self.tracker = NullTracker()
        self._ctx: Any = None

    @property
    def parent(self) -> str | None:
        return getattr(self.tracker, "run_id", None)

    def __enter__(self) -> RowLogger:
        self._ctx = self.tracker.start_suite(self.suite.name, self.suite.settings)
        self._ctx.__enter__()
        self.tracker.fail_dead_runs()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ctx.__exit__(exc_type, exc, tb)

    def row_done(self, spec: Any, error: BaseException | None) -> None:
        """Log a finished row (and its post-processed rows) from disk, or a failed row's FAILED run."""
        if error is None:
            self.ensure_logged([spec.row])
            return
        self.tracker.log_finished_run(
            spec.row,
            tags={
                "model": spec.model,
                "row": getattr(spec, "row_name", spec.model),
                "seed": spec.seed,
                "clip2video.suite_run": self.parent,
                "error": f"{type(error).__name__}: {error}"[:5000],
            },
            params={"model": spec.model, "row": getattr(spec, "row_name", spec.model), "seed": spec.seed},
            metrics={},
            status="FAILED",
        )

    def ensure_logged(self, rows: Iterable[str]) -> None:
        """Log each row's record (and its ``+post`` rows) unless MLflow already has it."""
        folder = self.runs_dir / self.suite.name
        for row in rows:
            dirs = [folder / row, *sorted(folder.glob(f"{row}+*"))]
            for row_dir in dirs:
                if (row_dir / METRICS_FILE).is_file():
                    log_row(self.tracker, self.suite.name, row_dir, suite_run=self.parent)


def sync_records(
    runs_dir: str | Path, *, suites: list[str] | None = None, tracking_uri: str | None = None
) -> dict[str, int]:
    """Re-log every on-disk record MLflow is missing, and fail runs left RUNNING by dead processes.

    Returns ``{"logged": n, "failed_dead": m, "unreadable": [...]}``: a record that is incomplete or
    does not match its manifest is not logged, and its one-line reason is listed, while every other
    record is still logged. Idempotent: a record already logged is skipped.
    """
    runs = Path(runs_dir)
    names = suites or sorted(p.parent.name for p in runs.glob("*/suite.json"))
    tracker = create_tracker(tracking_uri, enabled=True)
    counts: dict[str, Any] = {"logged": 0, "failed_dead": 0, "unreadable": []}
    for name in names:
        try:
            info = read_suite_info(runs, name)
        except RecordError as exc:
            counts["unreadable"].append(str(exc))
            continue
        tracker.open_experiment(name)
        counts["failed_dead"] += len(tracker.fail_dead_runs())
        for row in info.rows:
            row_dir = runs / name / row
            if not (row_dir / METRICS_FILE).is_file():
                continue
            try:
                logged = log_row(tracker, name, row_dir)
            except RecordError as exc:
                counts["unreadable"].append(str(exc))
                continue
            counts["logged"] += logged is not None
    return counts


__all__ = ["RowLogger", "log_row", "sync_records", "row_params", "row_metrics", "row_history"]

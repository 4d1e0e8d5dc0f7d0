"""MLflow tracking (the only module that imports mlflow): one experiment per suite, one run per model.

Embedded by default: a SQLite store ``sqlite:///<cwd>/mlruns.db`` and artifacts in
``<cwd>/mlartifacts`` (no server); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` points at a
shared server instead. An unreachable server is an error before training starts
(``check_tracking_server``); a failure mid-run only warns, once, and turns tracking off for the
rest of the run: results and checkpoints are on disk before they are logged.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from clip2video.errors import Clip2VideoError

DB_NAME = "mlruns.db"
# Without this experiment tag MLflow 3.x's UI opens an experiment in its GenAI view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
RECORD_TAG = "clip2video.record"  # "<suite>/<row>"
RECORD_ID_TAG = "clip2video.record_id"  # digest of the record's metrics.json: one MLflow run per record
OWNER_TAGS = ("clip2video.host", "clip2video.pid")
ARTIFACTS_NAME = "mlartifacts"
VERSIONED_PACKAGES = ("torch", "open_clip_torch", "decord", "mlflow", "numpy")
# Fail within seconds, not minutes, when a server goes away mid-run (user settings win).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_MAX_PARAM_LENGTH = 6000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
T = TypeVar("T")


class TrackingError(Clip2VideoError):
    """The tracking store cannot be reached or used."""


class TrackingWarning(UserWarning):
    """Tracking failed mid-run; the run goes on and its results stay on disk."""


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<workdir or cwd>/mlruns.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(workdir or Path.cwd()).resolve() / DB_NAME).as_posix()}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :] or ".")


def artifact_root(uri: str) -> str | None:
    """Where an embedded store keeps artifacts: ``mlartifacts/`` beside the SQLite file (None for servers)."""
    db = _sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / ARTIFACTS_NAME).as_uri()


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Raise ``TrackingError`` naming ``uri`` and what to do when the store cannot be used."""
    scheme = urlparse(uri).scheme
    advice = "start the server, fix --tracking-uri / MLFLOW_TRACKING_URI, or pass --no-tracking"
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) only)
                if response.status != 200:
                    raise TrackingError(
                        f"MLflow tracking server {uri} answered {response.status} on /health; {advice}"
                    )
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}); {advice}") from exc
        return
    if scheme == "sqlite":
        db = _sqlite_path(uri)
        if db is None or not db.parent.exists() and str(db) != ":memory:":
            raise TrackingError(
                f"tracking URI {uri}: folder {db.parent if db else '?'} does not exist; create it or {advice}"
            )
        return
    if scheme in ("", "file"):
        raise TrackingError(
            f"tracking URI {uri}: MLflow refuses plain-folder stores; use sqlite:///path/mlruns.db or an http(s) server"
        )


def git_state(cwd: str | Path | None = None) -> dict[str, str]:
    """``{"git_commit": sha, "git_dirty": "true"/"false"}``, or ``unknown`` without git."""

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit.strip() if commit else "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status.strip())).lower(),
    }


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that decide the numbers."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": "0.0001"}`` (lists and scalars as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:_MAX_PARAM_LENGTH]
    return out


class NullTracker:
    """Tracking off: the same methods, doing nothing."""

    uri: str | None = None
    failed = False

    @contextmanager
    def start_suite(self, suite: str, config: Mapping[str, Any] | None = None) -> Iterator[NullTracker]:
        yield self

    @contextmanager
    def start_model(self, name: str, config: Mapping[str, Any] | None = None) -> Iterator[NullTracker]:
        yield self

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Nothing."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Nothing."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Nothing."""

    def log_dict(self, data: Mapping[str, Any], filename: str) -> None:
        """Nothing."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Nothing."""

    def log_final(self, metrics: Mapping[str, float], intervals: Mapping[str, tuple[float, float]]) -> None:
        """Nothing."""

    def log_record(self, record_dir: str | Path) -> None:
        """Nothing."""

    def open_experiment(self, name: str) -> str | None:
        """Nothing."""
        return None

    def log_finished_run(self, name: str, **kwargs: Any) -> str | None:
        """Nothing."""
        return None

    def find_runs(self, tag: str, value: str, statuses: tuple[str, ...] = ("FINISHED",)) -> list[Any]:
        """Nothing found."""
        return []

    def fail_dead_runs(self) -> list[str]:
        """Nothing."""
        return []


class Tracker(NullTracker):
    """MLflow runs for a suite (parent run) and its models (nested runs), tolerant of failures."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        workdir: str | Path | None = None,
        check: bool = True,
        timeout: float = 5.0,
    ) -> None:
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.uri = tracking_uri or default_tracking_uri(workdir)
        if check:
            check_tracking_server(self.uri, timeout=timeout)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        self.failed = False
        self.experiment_id: str | None = None
        self._runs: list[str] = []  # stack: parent, then the active model run

    @property
    def run_id(self) -> str | None:
        """The active run (the model's, else the suite's)."""
        return self._runs[-1] if self._runs else None

    def _safe(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        if self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (any tracking failure must not stop the run)
            self.failed = True
            warnings.warn(
                f"MLflow tracking at {self.uri} failed while trying to {what} ({type(exc).__name__}: {exc}); "
                "tracking is off for the rest of this run; checkpoints and results are on disk",
                TrackingWarning,
                stacklevel=3,
            )
            return None

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = artifact_root(self.uri)
            try:
                experiment_id = self.client.create_experiment(name, artifact_location=location)
            except Exception:  # created concurrently by another process
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                experiment_id = found.experiment_id
        else:
            experiment_id = found.experiment_id
        for key, value in EXPERIMENT_KIND.items():
            if found is None or found.tags.get(key) != value:
                self.client.set_experiment_tag(experiment_id, key, value)
        return experiment_id

    def open_experiment(self, name: str) -> str | None:
        """Open (or create) experiment ``name`` for the runs that follow, tagged as model development."""
        self.experiment_id = self._safe(f"open experiment {name!r}", self._experiment, name)
        return self.experiment_id

    def log_finished_run(
        self,
        name: str,
        *,
        tags: Mapping[str, Any],
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        steps: list[tuple[str, float, int]] = (),  # type: ignore[assignment]
        artifacts: list[Path] = (),  # type: ignore[assignment]
        status: str = "FINISHED",
        parent: str | None = None,
    ) -> str | None:
        """One complete run from values already on disk (a row's record): created, logged, ended."""
        from mlflow.entities import Metric

        all_tags = dict(tags)
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent
        run_id = self._start(name, {k: str(v) for k, v in all_tags.items()})
        if run_id is None:
            return None
        self._runs.append(run_id)
        try:
            self.log_params(params)
            self.log_metrics(metrics)
            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, int(step)) for k, v, step in steps]
            for i in range(0, len(items), _METRICS_PER_BATCH):
                self._log_batch("log metric history", metrics=items[i : i + _METRICS_PER_BATCH])
            for path in artifacts:
                self.log_artifact(path, artifact_path="record")
        finally:
            self._runs.pop()
        self._end(run_id, status)
        return run_id

    def find_runs(self, tag: str, value: str, statuses: tuple[str, ...] = ("FINISHED",)) -> list[Any]:
        """Runs of the open experiment whose ``tag`` equals ``value`` (and whose status is listed)."""
        if self.experiment_id is None:
            return []
        query = f"tags.`{tag}` = '{value}'"
        found = self._safe(
            "search runs", self.client.search_runs, [self.experiment_id], query, max_results=1000
        )
        return [r for r in (found or []) if r.info.status in statuses]

    def fail_dead_runs(self) -> list[str]:
        """Mark FAILED the open experiment's RUNNING runs whose process (on this host) is gone."""
        if self.experiment_id is None:
            return []
        found = self._safe(
            "search runs", self.client.search_runs, [self.experiment_id], "attributes.status = 'RUNNING'"
        )
        failed = []
        for run in found or []:
            host, pid = (run.data.tags.get(t) for t in OWNER_TAGS)
            if host == socket.gethostname() and pid and pid.isdigit() and not _alive(int(pid)):
                self._safe("end a dead run", self.client.set_terminated, run.info.run_id, "FAILED")
                failed.append(run.info.run_id)
        return failed

    def _start(self, name: str, tags: dict[str, str]) -> str | None:
        run = self._safe(
            f"start run {name!r}", self.client.create_run, self.experiment_id, run_name=name, tags=tags
        )
        return run.info.run_id if run is not None else None

    def _end(self, run_id: str | None, status: str) -> None:
        if run_id is not None:
            self._safe("end the run", self.client.set_terminated, run_id, status)

    @contextmanager
    def _run(self, name: str, tags: dict[str, str], config: Mapping[str, Any] | None) -> Iterator[Tracker]:
        run_id = self._start(name, tags)
        self._runs.append(run_id)
        status = "FAILED"
        try:
            if config:
                self.log_params(config)
                self.log_dict(config, "config.json")
            yield self
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self._runs.pop()
            self._end(run_id, status)

    @contextmanager
    def start_suite(self, suite: str, config: Mapping[str, Any] | None = None) -> Iterator[Tracker]:
        """The suite's parent run in experiment ``suite``, tagged with git state, versions and device."""
        self.open_experiment(suite)
        tags = {"suite": suite, **environment_tags(config), **owner_tags()}
        with self._run(suite, tags, config) as tracker:
            yield tracker

    @contextmanager
    def start_model(self, name: str, config: Mapping[str, Any] | None = None) -> Iterator[Tracker]:
        """A model's run, nested under the active suite run."""
        tags = {"model": name, **environment_tags(config)}
        if self._runs and self._runs[0] is not None:
            tags["mlflow.parentRunId"] = self._runs[0]
        with self._run(name, tags, config) as tracker:
            yield tracker

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Flattened params (``train.lr``) of the active run."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self._log_batch("log params", params=items[i : i + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Numeric metrics of the active run (non-numbers are skipped), at ``step`` for per-epoch values."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            items.append(Metric(key, float(value), now, step or 0))
        for i in range(0, len(items), _METRICS_PER_BATCH):
            self._log_batch("log metrics", metrics=items[i : i + _METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tags of the active run."""
        from mlflow.entities import RunTag

        self._log_batch("set tags", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def _log_batch(self, what: str, **items: Any) -> None:
        if self.run_id is not None and any(items.values()):
            self._safe(what, self.client.log_batch, self.run_id, **items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file (or folder) that is already on disk."""
        if self.run_id is not None:
            self._safe(
                f"log artifact {path}", self.client.log_artifact, self.run_id, str(path), artifact_path
            )

    def log_dict(self, data: Mapping[str, Any], filename: str) -> None:
        """A dict as a JSON artifact."""
        if self.run_id is not None:
            self._safe(f"log {filename}", self.client.log_dict, self.run_id, dict(data), filename)

    def log_final(self, metrics: Mapping[str, float], intervals: Mapping[str, tuple[float, float]]) -> None:
        """Final metrics with their bootstrap intervals as ``<key>_ci_lo`` / ``<key>_ci_hi``."""
        out = dict(metrics)
        for key, (lo, hi) in intervals.items():
            out[f"{key}_ci_lo"], out[f"{key}_ci_hi"] = lo, hi
        self.log_metrics(out)

    def log_record(self, record_dir: str | Path) -> None:
        """A run record's files (metrics, ranks, compressed similarities, config) as artifacts."""
        folder = Path(record_dir)
        for path in sorted(folder.glob("*")):
            if path.is_file() and path.suffix in (".json", ".npz"):
                self.log_artifact(path, artifact_path="record")


def owner_tags() -> dict[str, str]:
    """Host and process id of the run's owner (``clip2video sync`` fails RUNNING runs of dead owners)."""
    return {"clip2video.host": socket.gethostname(), "clip2video.pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def environment_tags(config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Git commit and dirty flag, package versions and device, as run tags."""
    git = git_state()
    tags = {"mlflow.source.git.commit": git["git_commit"], "git_dirty": git["git_dirty"]}
    tags.update({f"version.{name}": version for name, version in package_versions().items()})
    device = (config or {}).get("device")
    if device:
        tags["device"] = str(device)
    return tags


def create_tracker(
    tracking_uri: str | None = None, *, enabled: bool = True, **kwargs: Any
) -> Tracker | NullTracker:
    """A ``Tracker`` (checked before training starts) or a ``NullTracker`` when tracking is off."""
    return Tracker(tracking_uri, **kwargs) if enabled else NullTracker()

"""MLflow tracking (the only module that imports mlflow): one experiment per suite, one run per model.

Embedded by default: a SQLite store ``sqlite:///<cwd>/mlruns.db`` and artifacts in
``<cwd>/mlartifacts`` (no server); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` points at a
shared server instead. A store that cannot be used (an unreachable server, a file that is not an
SQLite database, a database another process keeps locked) is one error line before training
starts (``check_store``), or a warning and an untracked run with ``--tracking optional``; a
failure mid-run only warns, once, and turns tracking off for the rest of the run: results and
checkpoints are on disk before they are logged.

The MLflow 3.x UI decides which view an experiment opens in from the browser's *workflow type*
(the sidebar's "GenAI | Model training" switch, kept in the browser's local storage as
``mlflow.workflowType_v1``, default ``genai``; a ``?workflowType=`` URL parameter overrides it),
not from the experiment's tags. :data:`ui_app` serves MLflow's own server and UI unchanged except
that a browser which has never chosen starts on "Model training", so clicking an experiment in the
list opens its runs table (``clip2video ui``, or ``mlflow ui --app-name clip2video``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
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
# The experiment's kind for MLflow's own tools (the UI's "experiment type" selector shows it); the
# 3.x UI's navigation does not read it: see WORKFLOW_STORAGE_KEY and ui_app.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The MLflow 3.x UI's workflow type (WorkflowTypeContext): a JSON string in the browser's local
# storage under this key ("genai" when absent), overridden by a ``workflowType`` URL parameter.
WORKFLOW_STORAGE_KEY = "mlflow.workflowType_v1"
UI_WORKFLOW_TYPE = "machine_learning"
SUITE_RUN_TAG = "clip2video.suite"  # on a suite's parent run: the suite's name
STORE_TIMEOUT_S = 5.0  # how long the check before work waits for a busy SQLite store
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


def sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :] or ".")


def artifact_root(uri: str) -> str | None:
    """Where an embedded store keeps artifacts: ``mlartifacts/`` beside the SQLite file (None for servers)."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / ARTIFACTS_NAME).as_uri()


ADVICE = (
    "fix --tracking-uri / MLFLOW_TRACKING_URI, pass --tracking optional to run untracked, or --no-tracking"
)
SQLITE_HEADER = b"SQLite format 3\x00"


def check_store(uri: str, timeout: float | None = None) -> None:
    """Raise ``TrackingError`` (one line naming ``uri`` and what to do) when the store cannot be used.

    A server must answer ``/health``; an SQLite store's folder must exist, and an existing file
    must be an SQLite database that a writer can lock within ``timeout`` seconds (a database
    another process keeps locked is "busy"). Plain-folder stores are refused (MLflow 3 does).
    """
    timeout = STORE_TIMEOUT_S if timeout is None else float(timeout)
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(uri, timeout)
    elif scheme in ("", "file"):
        raise TrackingError(
            f"tracking URI {uri}: MLflow refuses plain-folder stores; use sqlite:///path/mlruns.db or an http(s) server"
        )


# The name the check before work has always called (it now checks SQLite files too).
check_tracking_server = check_store


def _check_server(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    advice = "start the server, " + ADVICE
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) only)
            if response.status != 200:
                raise TrackingError(
                    f"MLflow tracking server {uri} answered {response.status} on /health; {advice}"
                )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}); {advice}") from exc


def _check_sqlite(uri: str, timeout: float) -> None:
    db = sqlite_path(uri)
    if db is None or str(db) == ":memory:":
        return
    if not db.parent.exists():
        raise TrackingError(f"tracking URI {uri}: folder {db.parent} does not exist; create it or {ADVICE}")
    if not db.exists():
        return  # MLflow creates it
    if not db.is_file():
        raise TrackingError(f"tracking URI {uri}: {db} is a folder, not an SQLite file; {ADVICE}")
    try:
        with db.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise TrackingError(f"tracking store {db} cannot be read ({exc.strerror or exc}); {ADVICE}") from exc
    if head and head != SQLITE_HEADER:
        raise TrackingError(
            f"tracking store {db} is not an SQLite database (it does not start with the SQLite header); "
            f"move it away to start a new store, or {ADVICE}"
        )
    try:
        conn = sqlite3.connect(str(db), timeout=timeout)
    except sqlite3.Error as exc:
        raise TrackingError(f"tracking store {db} cannot be opened ({exc}); {ADVICE}") from exc
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads page 1: a corrupt file fails here
        conn.execute("BEGIN IMMEDIATE")  # a writer's lock: waits `timeout` for a busy database
        conn.rollback()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise TrackingError(
                f"tracking store {db} is locked by another process (waited {timeout:g} s for it); wait for "
                f"that process, or {ADVICE}"
            ) from exc
        raise TrackingError(f"tracking store {db} cannot be used ({exc}); {ADVICE}") from exc
    except sqlite3.DatabaseError as exc:
        raise TrackingError(
            f"tracking store {db} is not a usable SQLite database ({exc}); move it away to start a new store, "
            f"or {ADVICE}"
        ) from exc
    finally:
        conn.close()


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

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, *, timestamp: float | None = None
    ) -> None:
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

    def log_suite_results(
        self, suite: str, metrics: Mapping[str, float], artifacts: Any = (), **kwargs: Any
    ) -> None:
        """Nothing."""
        return None

    def fail_dead_runs(self) -> list[str]:
        """Nothing."""
        return []


def open_client(uri: str, *, probe: bool = True) -> Any:
    """An ``MlflowClient`` for ``uri``; with ``probe``, one cheap query first, so a store MLflow
    cannot open (a corrupt database, a schema from another MLflow version) is one ``TrackingError``
    line instead of a database traceback."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        if probe:
            client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 (sqlalchemy, mlflow and OS errors alike)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TrackingError(
            f"tracking store {uri} cannot be opened by MLflow ({type(exc).__name__}: {first[:300]}); {ADVICE}"
        ) from exc
    return client


class Tracker(NullTracker):
    """MLflow runs for a suite (parent run) and its models (nested runs), tolerant of failures."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        workdir: str | Path | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> None:
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.uri = tracking_uri or default_tracking_uri(workdir)
        if check:
            check_store(self.uri, timeout=timeout)
        self.client = open_client(self.uri, probe=check)
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
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> str | None:
        """One complete run from values already on disk (a row's record): created, logged, ended.

        ``start_time`` / ``end_time`` (Unix seconds) are the run's real start and end, as the
        record states them; ``steps`` are ``(key, value, step)`` or ``(key, value, step, time)``
        with the wall-clock time (Unix seconds) the value was measured at.
        """
        from mlflow.entities import Metric

        all_tags = dict(tags)
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent
        run_id = self._start(name, {k: str(v) for k, v in all_tags.items()}, start_time)
        if run_id is None:
            return None
        self._runs.append(run_id)
        try:
            self.log_params(params)
            self.log_metrics(metrics, timestamp=end_time)
            now = _ms(end_time) if end_time is not None else _ms(time.time())
            items = [
                Metric(k, float(v), _ms(rest[0]) if rest and rest[0] is not None else now, int(step))
                for k, v, step, *rest in steps
            ]
            for i in range(0, len(items), _METRICS_PER_BATCH):
                self._log_batch("log metric history", metrics=items[i : i + _METRICS_PER_BATCH])
            for path in artifacts:
                self.log_artifact(path, artifact_path="record")
        finally:
            self._runs.pop()
        self._end(run_id, status, end_time)
        return run_id

    def suite_run(self, suite: str) -> str | None:
        """The latest parent run of ``suite`` (tagged ``clip2video.suite``), or None."""
        experiment = self.open_experiment(suite)
        if experiment is None:
            return None
        found = self._safe(
            "search runs",
            self.client.search_runs,
            [experiment],
            f"tags.`{SUITE_RUN_TAG}` = '{suite}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0].info.run_id if found else None

    def log_suite_results(
        self,
        suite: str,
        metrics: Mapping[str, float],
        artifacts: Any = (),
        *,
        run_id: str | None = None,
    ) -> str | None:
        """The suite's results on its parent run (``run_id``, else the latest one): summary metrics
        (each row's mean and interval) and the tables and plots as artifacts, ``(path, folder)``."""
        run_id = run_id or self.suite_run(suite)
        if run_id is None:
            return None
        self._runs.append(run_id)
        try:
            self.log_metrics(metrics)
            for path, folder in artifacts:
                self.log_artifact(path, artifact_path=folder)
        finally:
            self._runs.pop()
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

    def _start(self, name: str, tags: dict[str, str], start_time: float | None = None) -> str | None:
        run = self._safe(
            f"start run {name!r}",
            self.client.create_run,
            self.experiment_id,
            start_time=None if start_time is None else _ms(start_time),
            run_name=name,
            tags=tags,
        )
        return run.info.run_id if run is not None else None

    def _end(self, run_id: str | None, status: str, end_time: float | None = None) -> None:
        if run_id is not None:
            end = None if end_time is None else _ms(end_time)
            self._safe("end the run", self.client.set_terminated, run_id, status, end_time=end)

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
        tags = {"suite": suite, SUITE_RUN_TAG: suite, **environment_tags(config), **owner_tags()}
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

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, *, timestamp: float | None = None
    ) -> None:
        """Numeric metrics of the active run (non-numbers are skipped), at ``step`` for per-epoch
        values, measured at ``timestamp`` (Unix seconds; default now)."""
        from mlflow.entities import Metric

        now = _ms(time.time() if timestamp is None else timestamp)
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


def _ms(seconds: float) -> int:
    """Unix seconds -> MLflow's integer milliseconds."""
    return int(round(float(seconds) * 1000))


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


# ----------------------------------------------------------------------------------------------
# The MLflow UI, opening experiments in their runs table
# ----------------------------------------------------------------------------------------------

UI_APP_NAME = "clip2video"  # entry point group "mlflow.app": `mlflow ui --app-name clip2video`
_KEY, _VALUE = json.dumps(WORKFLOW_STORAGE_KEY), json.dumps(json.dumps(UI_WORKFLOW_TYPE))
_UI_SCRIPT = (
    "<script>/* clip2video: a browser that has never chosen starts on Model training */"
    f"try{{if(window.localStorage.getItem({_KEY})===null){{window.localStorage.setItem({_KEY},{_VALUE})}}}}"
    "catch(e){}</script>"
)


def ui_index_html() -> bytes:
    """MLflow's ``index.html`` with :data:`_UI_SCRIPT` first in its ``<head>``: before the UI's
    scripts run, a browser with no stored workflow type gets ``machine_learning``; a choice the
    user made with the sidebar switch is kept."""
    import mlflow.server

    index = Path(mlflow.server.__file__).parent / "js" / "build" / "index.html"
    html = index.read_text(encoding="utf-8")
    at = html.find("<head>")
    at = at + len("<head>") if at >= 0 else 0
    return (html[:at] + _UI_SCRIPT + html[at:]).encode("utf-8")


class UiApp:
    """ASGI app: MLflow's own server (``mlflow.server.fastapi_app``), except that the UI's page
    (``/``, under ``--static-prefix`` when set) is :func:`ui_index_html`.

    Registered as the MLflow app ``clip2video`` (``[project.entry-points."mlflow.app"]``), so
    ``mlflow ui --app-name clip2video`` (what ``clip2video ui`` runs) serves it with every option
    of ``mlflow server``.
    """

    def __init__(self) -> None:
        self._app: Any = None
        self._index: bytes | None = None

    def _inner(self) -> Any:
        if self._app is None:
            from mlflow.server.fastapi_app import app

            self._app = app
        return self._app

    def _index_paths(self) -> set[str]:
        prefix = os.environ.get("_MLFLOW_STATIC_PREFIX", "").rstrip("/")
        return {prefix + "/", prefix + "/index.html"} | ({prefix} if prefix else set())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope.get("type") == "http"
            and scope.get("method") in ("GET", "HEAD")
            and scope.get("path") in self._index_paths()
        ):
            if self._index is None:
                self._index = ui_index_html()
            body = self._index
            headers = [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-cache"),
                (b"x-content-type-options", b"nosniff"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
            return
        await self._inner()(scope, receive, send)


ui_app = UiApp()


def ui_app_registered() -> bool:
    """Whether MLflow can find the ``clip2video`` app (the package's ``mlflow.app`` entry point)."""
    return any(ep.name == UI_APP_NAME for ep in metadata.entry_points(group="mlflow.app"))


# ----------------------------------------------------------------------------------------------
# --tracking required | optional | off
# ----------------------------------------------------------------------------------------------

TRACKING_MODES = ("required", "optional", "off")


def untracked_warning(exc: Exception) -> None:
    """Warn that this run goes on untracked (``--tracking optional``), saying why in one line."""
    reason = str(exc).split("; ", 1)[0]
    warnings.warn(
        f"{reason}; --tracking optional: this run goes on untracked (its records are on disk: log them "
        "later with `clip2video sync`)",
        TrackingWarning,
        stacklevel=2,
    )


def resolve_tracking(mode: str, uri: str | None = None) -> bool:
    """Whether a run tracks: ``required`` (the check before work fails on a broken or busy store),
    ``optional`` (such a store is a warning and the run goes on untracked), ``off``."""
    if mode not in TRACKING_MODES:
        raise TrackingError(f"--tracking {mode!r}: expected one of {', '.join(TRACKING_MODES)}")
    if mode == "off":
        return False
    if mode == "optional":
        try:
            check_store(uri or default_tracking_uri())
        except TrackingError as exc:
            untracked_warning(exc)
            return False
    return True


def results_tracker(tracking_uri: str | None, enabled: bool) -> Tracker | NullTracker:
    """The tracker that puts a suite's tables, plots and summary metrics on its MLflow run after the
    rows (``report.tables.regenerate(tracker=...)``); a store that fails now is a warning, never an
    error: the results are on disk already."""
    if not enabled:
        return NullTracker()
    try:
        return Tracker(tracking_uri)
    except TrackingError as exc:
        warnings.warn(
            f"{exc}; the suite's results are not attached to its MLflow run", TrackingWarning, stacklevel=2
        )
        return NullTracker()

"""MLflow tracking against the embedded SQLite store and a real local ``mlflow server``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from clip2video.engine.records import write_run_record
from clip2video.errors import Clip2VideoError
from clip2video.tracking import (
    NullTracker,
    Tracker,
    TrackingError,
    TrackingWarning,
    check_store,
    check_tracking_server,
    create_tracker,
    default_tracking_uri,
    flatten,
)

CONFIG = {"suite": "smoke", "device": "cpu", "train": {"lr": 1e-3, "epochs": 2}, "models": ["meanp", "tab"]}


def log_suite(tracker: Tracker, tmp_path: Path) -> None:
    """What the runner does: a parent run, two nested model runs with epochs, metrics and artifacts."""
    artifact = tmp_path / "ranks.json"
    artifact.write_text(json.dumps({"t2v": [1, 2, 3]}))
    record_dir = write_run_record(
        tmp_path / "rec",
        name="row",
        metrics={"t2v_R1": 42.5},
        ranks_t2v=np.ones(3),
        ranks_v2t=np.ones(3),
        sim=np.eye(3),
    )
    with tracker.start_suite("smoke", CONFIG):
        for name in ("meanp", "tab"):
            with tracker.start_model(name, {**CONFIG, "model": name}):
                for epoch in range(2):
                    tracker.log_metrics({"loss": 1.0 / (epoch + 1), "val_t2v_R1": 10.0 * epoch}, step=epoch)
                tracker.log_metrics({"skip": "text", "flag": True})
                tracker.log_final({"t2v_R1": 42.5}, {"t2v_R1": (40.0, 45.0)})
                tracker.log_artifact(artifact, artifact_path="records")
                tracker.log_record(record_dir)
        tracker.log_dict({"rows": ["meanp", "tab"]}, "suite.json")


def check_logged(uri: str) -> None:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"smoke", "meanp", "tab"}
    parent = by_name["smoke"]
    for name in ("meanp", "tab"):
        run = by_name[name]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["train.lr"] == "0.001" and run.data.params["model"] == name
        assert run.data.metrics["t2v_R1"] == 42.5 and "skip" not in run.data.metrics
        assert (run.data.metrics["t2v_R1_ci_lo"], run.data.metrics["t2v_R1_ci_hi"]) == (40.0, 45.0)
        record_files = {f.path for f in client.list_artifacts(run.info.run_id, "record")}
        assert record_files == {
            f"record/{n}" for n in ("config.json", "metrics.json", "ranks.npz", "sim.npz")
        }
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5)]
        assert run.data.tags["device"] == "cpu"
        assert "version.mlflow" in run.data.tags and "mlflow.source.git.commit" in run.data.tags
        assert run.data.tags["git_dirty"] in ("true", "false", "unknown")
        files = {f.path for f in client.list_artifacts(run.info.run_id, "records")}
        assert files == {"records/ranks.json"}
        local = client.download_artifacts(run.info.run_id, "config.json")
        assert json.loads(Path(local).read_text())["model"] == name
    assert {f.path for f in client.list_artifacts(parent.info.run_id)} >= {"suite.json", "config.json"}


def test_embedded_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = Tracker()
    assert tracker.uri == f"sqlite:///{(tmp_path / 'mlruns.db').resolve().as_posix()}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        log_suite(tracker, tmp_path)
    check_logged(tracker.uri)
    assert (tmp_path / "mlruns.db").is_file()
    assert list((tmp_path / "mlartifacts").rglob("ranks.json"))
    assert not (tmp_path / "mlruns").exists()


def test_env_var_overrides_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:9/"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri(tmp_path).endswith("/mlruns.db")


def test_unreachable_server_is_a_clear_fast_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    uri = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(Clip2VideoError, match=rf"{uri}.*unreachable.*--no-tracking"):
        create_tracker(uri)
    assert time.monotonic() - start < 5


def test_folder_store_and_missing_folder_are_refused(tmp_path):
    with pytest.raises(Clip2VideoError, match="sqlite"):
        check_tracking_server(str(tmp_path / "mlruns"))
    with pytest.raises(Clip2VideoError, match="does not exist"):
        check_tracking_server(f"sqlite:///{tmp_path}/nope/mlruns.db")


def test_failure_mid_run_warns_once_and_keeps_going(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlruns.db")
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("server went away")

    with pytest.warns(TrackingWarning, match="server went away") as record:
        with tracker.start_suite("smoke", CONFIG):
            with tracker.start_model("meanp"):
                tracker.client.log_batch = broken
                tracker.log_metrics({"loss": 1.0}, step=0)
                tracker.log_metrics({"loss": 0.5}, step=1)
                tracker.log_params({"a": 1})
                tracker.log_artifact(tmp_path / "missing.txt")
    assert len(calls) == 1 and tracker.failed
    assert len([w for w in record if issubclass(w.category, TrackingWarning)]) == 1


def test_null_tracker_and_flatten():
    tracker = create_tracker(enabled=False)
    assert isinstance(tracker, NullTracker)
    with tracker.start_suite("x", CONFIG), tracker.start_model("m"):
        tracker.log_metrics({"a": 1.0})
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {}}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d": "x",
        "e": "{}",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.server
@pytest.mark.slow
def test_real_mlflow_server(tmp_path, monkeypatch):
    """Start ``mlflow server`` on 127.0.0.1, log a suite to it, read it back; then kill it mid-run."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--default-artifact-root",
        str(tmp_path / "server-artifacts"),
    ]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed in finally)
    server = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env={**os.environ}, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        check_tracking_server(uri)
        tracker = Tracker(uri)
        log_suite(tracker, tmp_path)
        check_logged(uri)

        # The server dies mid-run: the run goes on, with one warning.
        second = Tracker(uri)
        with pytest.warns(TrackingWarning, match=uri):
            with second.start_suite("smoke-2", CONFIG), second.start_model("meanp"):
                second.log_metrics({"loss": 1.0}, step=0)
                os.killpg(server.pid, signal.SIGKILL)  # the server and its web workers die at once
                server.wait(timeout=30)
                start = time.monotonic()
                for epoch in range(1, 4):
                    second.log_metrics({"loss": 1.0 / epoch}, step=epoch)
                assert time.monotonic() - start < 30
        assert second.failed
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()


# ----------------------------------------------------------------------------------------------
# A broken or busy store: one line before work, or --tracking optional
# ----------------------------------------------------------------------------------------------


def garbage_store(folder: Path) -> Path:
    db = folder / "mlruns.db"
    db.write_bytes(b"this is not a database\n" * 200)
    return db


@contextlib.contextmanager
def locked_store(folder: Path):
    """A real MLflow SQLite store that another connection holds an exclusive lock on."""
    db = folder / "mlruns.db"
    Tracker(f"sqlite:///{db}").open_experiment("x")  # a real MLflow store
    conn = sqlite3.connect(str(db))
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield db
    finally:
        conn.rollback()
        conn.close()


def test_check_store_names_a_garbage_and_a_locked_database(tmp_path, monkeypatch):
    db = garbage_store(tmp_path)
    with pytest.raises(TrackingError, match=rf"{db} is not an SQLite database.*--tracking optional"):
        check_store(f"sqlite:///{db}")
    with pytest.raises(TrackingError, match="is not an SQLite database"):
        Tracker(f"sqlite:///{db}")  # tracking starts with the same check
    (tmp_path / "b").mkdir()
    with locked_store(tmp_path / "b") as locked:
        start = time.monotonic()
        with pytest.raises(TrackingError, match=rf"{locked} is locked by another process \(waited 0.5 s"):
            check_store(f"sqlite:///{locked}", timeout=0.5)
        assert time.monotonic() - start < 5
    check_store(f"sqlite:///{locked}", timeout=0.5)  # the lock is gone: usable again


def test_row_logger_with_optional_tracking_warns_and_runs_untracked(tmp_path):
    from types import SimpleNamespace

    from clip2video.experiments.sync import RowLogger

    uri = f"sqlite:///{garbage_store(tmp_path)}"
    suite = SimpleNamespace(name="smoke", settings=CONFIG)
    with pytest.raises(TrackingError, match="not an SQLite database"):
        RowLogger(suite, tmp_path / "runs", tracking_uri=uri, enabled=True)
    with pytest.warns(TrackingWarning, match="--tracking optional: this run goes on untracked"):
        logger = RowLogger(suite, tmp_path / "runs", tracking_uri=uri, enabled=True, optional=True)
    assert isinstance(logger.tracker, NullTracker)
    with logger:
        logger.ensure_logged([])


def _smoke_argv(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "ablation",
        "--suite",
        "smoke",
        "--models",
        "meanp",
        "--set",
        "train.epochs=1",
        "--data-root",
        str(tmp_path / "data"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
        "--no-progress",
        *extra,
    ]


@pytest.mark.parametrize("store", ["garbage", "locked"])
def test_a_broken_or_busy_store_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, store):
    from clip2video import tracking
    from clip2video.cli import main

    monkeypatch.setattr(tracking, "STORE_TIMEOUT_S", 0.5)
    with contextlib.ExitStack() as stack:
        db = garbage_store(tmp_path) if store == "garbage" else stack.enter_context(locked_store(tmp_path))
        capsys.readouterr()  # MLflow's own lines from making the store
        code = main(_smoke_argv(tmp_path, "--tracking-uri", f"sqlite:///{db}"))
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("clip2video: error: tracking store"), err
    assert ("not an SQLite database" if store == "garbage" else "locked by another process") in lines[0]
    assert "Traceback" not in err and "DatabaseError" not in err and "OperationalError" not in err
    assert not (tmp_path / "runs" / "smoke").exists()  # before any work


@pytest.mark.slow
def test_tracking_optional_warns_once_and_the_run_goes_on_untracked(tmp_path, capsys):
    from clip2video.cli import main

    db = garbage_store(tmp_path)
    before = db.read_bytes()
    code = main(_smoke_argv(tmp_path, "--tracking-uri", f"sqlite:///{db}", "--tracking", "optional"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings_ = [line for line in captured.err.splitlines() if line.startswith("clip2video: warning:")]
    assert len(warnings_) == 1 and "--tracking optional: this run goes on untracked" in warnings_[0]
    assert "not an SQLite database" in warnings_[0] and "Traceback" not in captured.err
    assert (tmp_path / "runs" / "smoke" / "meanp" / "metrics.json").is_file()
    assert (tmp_path / "results" / "smoke" / "result.json").is_file()
    assert db.read_bytes() == before  # the broken store was not touched


def test_tracking_flag_is_on_the_run_verbs(capsys):
    from clip2video.cli import main

    for verb in ("ablation", "eval"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = capsys.readouterr().out
        assert "--tracking {required,optional,off}" in text and "untracked" in text

"""MLflow from the on-disk records: the parent logs each finished row; ``clip2video sync`` re-logs.

One tracked smoke run (meanp, clip2video) is shared by the tests below; the browser test loads
its runs page in headless Chromium (skipped, saying why, where Chromium is absent).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from clip2video.cli import main
from clip2video.experiments.sync import sync_records
from clip2video.tracking import EXPERIMENT_KIND, RECORD_ID_TAG
from tests.support.protocol_fixtures import SMOKE_MODELS, run_smoke


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    run_smoke(root, tracking=True, tracking_uri=uri)
    return root, uri


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def row_runs(uri: str) -> dict[str, object]:
    c = client(uri)
    experiment = c.get_experiment_by_name("smoke")
    runs = c.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    return {r.info.run_name: r for r in runs if RECORD_ID_TAG in r.data.tags}


def test_rows_are_logged_from_their_records(tracked):
    root, uri = tracked
    c = client(uri)
    experiment = c.get_experiment_by_name("smoke")
    assert {k: experiment.tags.get(k) for k in EXPERIMENT_KIND} == EXPERIMENT_KIND
    runs = row_runs(uri)
    assert sorted(runs) == sorted(SMOKE_MODELS)
    run = runs["clip2video"]
    params, metrics = run.data.params, run.data.metrics
    assert params["model"] == "clip2video" and params["seed"] == "0"
    assert params["train.epochs"] == "2" and params["eval.tie_policy"] == "mean"
    assert "frames.max_frames" in params
    assert {"t2v_R1", "v2t_R1", "order_acc"} <= set(metrics)
    history = c.get_metric_history(run.info.run_id, "train/epoch_loss")
    assert len(history) == 2 and history[0].step < history[1].step
    suite_run = run.data.tags.get("clip2video.suite_run")
    assert suite_run and c.get_run(suite_run).info.status == "FINISHED"


def test_sync_is_idempotent_and_relogs_what_mlflow_lost(tracked, tmp_path):
    root, _ = tracked
    db = tmp_path / "mlruns.db"
    shutil.copy(root / "mlruns.db", db)
    uri = f"sqlite:///{db}"
    assert sync_records(root / "runs", tracking_uri=uri)["logged"] == 0
    c = client(uri)
    c.delete_run(row_runs(uri)["meanp"].info.run_id)
    assert main(["sync", "--runs-dir", str(root / "runs"), "--tracking-uri", uri, "--suite", "smoke"]) == 0
    assert sorted(row_runs(uri)) == sorted(SMOKE_MODELS)
    assert sync_records(root / "runs", tracking_uri=uri)["logged"] == 0


def test_sync_fails_runs_left_running_by_a_dead_process(tracked, tmp_path):
    root, _ = tracked
    db = tmp_path / "mlruns.db"
    shutil.copy(root / "mlruns.db", db)
    uri = f"sqlite:///{db}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    c = client(uri)
    experiment = c.get_experiment_by_name("smoke")
    tags = {"clip2video.host": socket.gethostname(), "clip2video.pid": str(dead.pid)}
    orphan = c.create_run(experiment.experiment_id, run_name="smoke", tags=tags).info.run_id
    alive = c.create_run(
        experiment.experiment_id, run_name="smoke", tags={**tags, "clip2video.pid": str(os.getpid())}
    ).info.run_id
    assert sync_records(root / "runs", tracking_uri=uri)["failed_dead"] == 1
    assert c.get_run(orphan).info.status == "FAILED"
    assert c.get_run(alive).info.status == "RUNNING"


def _rendered_text(url: str) -> str:
    """The page's text after headless Chromium has run its scripts (virtual time: 60 s)."""
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=2400,1200"]
    cmd += ["--virtual-time-budget=60000", "--dump-dom", url]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=240).stdout
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)).replace("&nbsp;", " ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is absent (Debian package: chromium)")
def test_the_mlflow_ui_lists_the_runs_with_a_metric_column(tracked):
    root, uri = tracked
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    port = _free_port()
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", uri],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its web workers go with it
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        experiment = client(uri).get_experiment_by_name("smoke")
        runs = row_runs(uri)
        ids = quote(json.dumps([r.info.run_id for r in runs.values()]))
        eid = experiment.experiment_id
        pages = {
            # the training-runs table, sorted by a metric
            "runs": f"{base}/#/experiments/{eid}/runs?orderByKey=metrics.%60t2v_R1%60",
            # the comparison of the row runs: their metrics side by side
            "compare": f"{base}/#/compare-runs?runs={ids}&experiments=%5B%22{eid}%22%5D",
        }
        text = {name: _rendered_text(url) for name, url in pages.items()}
        Path(os.environ.get("CLIP2VIDEO_UI_DUMP", os.devnull)).write_text(json.dumps(text))
        for name in SMOKE_MODELS:
            assert name in text["runs"] and name in text["compare"], f"run {name} missing from the UI"
        assert "Training runs" in text["runs"], "the experiment opened in another view than training runs"
        assert "Sort: t2v_R1" in text["runs"] and "Metrics: t2v_R1" in text["compare"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

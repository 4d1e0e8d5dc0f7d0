"""MLflow from the on-disk records: the parent logs each finished row; ``clip2video sync`` re-logs.

One tracked smoke run (meanp, clip2video) is shared by the tests below, its tables and plots attached
to the suite's run as ``clip2video ablation`` does; the browser test serves it with ``clip2video ui``,
opens the experiments list in headless Chromium (chromedriver), clicks the experiment and reads the
runs table (skipped, saying why, where Chromium or chromedriver is absent).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest

from clip2video.cli import main
from clip2video.engine.records import read_run_record
from clip2video.experiments.sync import sync_records
from clip2video.report.tables import regenerate
from clip2video.tracking import EXPERIMENT_KIND, RECORD_ID_TAG, SUITE_RUN_TAG, Tracker, ui_app_registered
from tests.support import webdriver
from tests.support.protocol_fixtures import SMOKE_MODELS, run_smoke


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    run_smoke(root, tracking=True, tracking_uri=uri)
    regenerate(root / "runs", root / "results", ["smoke"], tracker=Tracker(uri))  # as `clip2video ablation`
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


def test_row_runs_carry_every_setting_and_their_real_times(tracked):
    root, uri = tracked
    c = client(uri)
    for name, run in row_runs(uri).items():
        params = run.data.params
        record = read_run_record(root / "runs" / "smoke" / name)
        # backbone, weights source, protocol and every model option
        assert params["backbone"] == "tiny" and params["backbone.clip"] == "tiny"
        assert params["weights"] == "none (from scratch)" and params["protocol"] == "synthetic"
        for option in ("temporal_layers", "center_k", "tdb_proj", "center_weight"):
            assert params[f"model.{option}"] == str(record.config["model"][option]), option
        assert params["model_config.name"] == name and params["text.max_words"] == "32"
        # the run's real start and end (from the record), not the moment it was logged
        times = record.extra["wall_clock"]
        assert run.info.start_time == round(times["start"] * 1000)
        assert run.info.end_time == round(times["end"] * 1000)
        epochs = [e["wall_clock"] for e in record.extra["history"]]
        assert (
            times["start"] <= epochs[0]["start"] < epochs[0]["end"] <= epochs[1]["start"] < epochs[1]["end"]
        )
        assert run.info.end_time - run.info.start_time >= 1000 * (epochs[1]["end"] - epochs[0]["start"])
        history = c.get_metric_history(run.info.run_id, "train/epoch_loss")
        assert [m.timestamp for m in history] == [round(e["end"] * 1000) for e in epochs]  # one per epoch


def test_the_suite_run_carries_each_rows_mean_interval_and_the_results(tracked):
    root, uri = tracked
    c = client(uri)
    experiment = c.get_experiment_by_name("smoke")
    (suite_run,) = c.search_runs([experiment.experiment_id], f"tags.`{SUITE_RUN_TAG}` = 'smoke'")
    metrics = suite_run.data.metrics
    values = pd.read_csv(root / "results" / "smoke" / "values.csv")
    for model in SMOKE_MODELS:
        mean = values[(values.row == model) & (values.metric == "t2v_R1") & (values.seed == "mean")].iloc[0]
        assert metrics[f"{model}/t2v_R1"] == pytest.approx(mean.value)
        assert metrics[f"{model}/t2v_R1_lo"] == pytest.approx(mean.lo)
        assert metrics[f"{model}/t2v_R1_hi"] == pytest.approx(mean.hi)
        assert metrics[f"{model}/t2v_R1_lo"] <= metrics[f"{model}/t2v_R1"] <= metrics[f"{model}/t2v_R1_hi"]
    files = {Path(a.path).name for a in c.list_artifacts(suite_run.info.run_id, "results")}
    assert {
        "table.md",
        "table.tex",
        "table.csv",
        "values.csv",
        "result.json",
        "smoke_r1.png",
        "rank_hist.pdf",
    } <= files


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


def test_sync_logs_every_readable_record_and_names_the_unreadable_one(tracked, tmp_path, capsys):
    root, _ = tracked
    runs = tmp_path / "runs"
    shutil.copytree(root / "runs", runs)
    (runs / "smoke" / "clip2video" / "ranks.npz").write_bytes(b"not the recorded ranks")
    uri = f"sqlite:///{tmp_path / 'empty.db'}"  # a store that has none of the records
    assert main(["sync", "--runs-dir", str(runs), "--tracking-uri", uri, "--suite", "smoke"]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("clip2video: error:")]
    assert (
        line.startswith("clip2video: error: 1 record(s) not logged: ")
        and str(runs / "smoke" / "clip2video") in line
    )
    assert sorted(row_runs(uri)) == sorted(m for m in SMOKE_MODELS if m != "clip2video")


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


def _ui_env(tmp: Path) -> dict[str, str]:
    """The environment `clip2video ui` runs in. Where the installed package metadata predates the
    ``mlflow.app`` entry point (an editable install made before pyproject.toml declared it), a
    dist-info holding just that entry point, copied from pyproject.toml, is put on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    if ui_app_registered():
        return env
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    app = project["entry-points"]["mlflow.app"]["clip2video"]
    info = tmp / "entry" / "clip2video_ui_entry-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clip2video-ui-entry\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[mlflow.app]\nclip2video = {app}\n")
    env["PYTHONPATH"] = os.pathsep.join([str(info.parent), env["PYTHONPATH"]])
    return env


@contextlib.contextmanager
def ui_server(uri: str, tmp: Path):
    """`clip2video ui` on a free port, until the block ends; yields its base URL."""
    port = webdriver.free_port()
    cli = Path(sys.executable).with_name("clip2video")
    log = open(tmp / "ui.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [str(cli), "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_ui_env(tmp),
        start_new_session=True,  # the mlflow server and its workers go with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"clip2video ui did not start: {(tmp / 'ui.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.skipif(webdriver.available() is not None, reason=str(webdriver.available()))
def test_clicking_the_experiment_in_the_list_opens_its_runs_table(tracked, tmp_path):
    """What a user does: open the experiments list of `clip2video ui` in a fresh browser, click the
    experiment, and see its runs table (MLflow 3's own server opens its GenAI overview instead)."""
    root, uri = tracked
    with ui_server(uri, tmp_path) as base, webdriver.Browser() as browser:
        browser.get(f"{base}/#/experiments")
        link = browser.wait_for(lambda: browser.find_link("smoke"), "the experiment in the list")
        browser.click(link)
        browser.wait_for(lambda: "/runs" in browser.url, "the runs view")

        def all_rows() -> str | None:
            text = browser.text()
            return text if all(m in text for m in SMOKE_MODELS) else None

        text = browser.wait_for(all_rows, "the row runs")
        browser.screenshot(tmp_path / "runs.png")
        Path(os.environ.get("CLIP2VIDEO_UI_DUMP", os.devnull)).write_text(
            json.dumps({"url": browser.url, "text": text})
        )
        assert "workflowType=machine_learning" in browser.url
        assert "Run Name" in text and "Duration" in text  # the runs table's columns
        assert "Token Usage" not in text and "Detect Issues" not in text  # not the GenAI overview
        # the sort by a metric column works in this table
        run_ids = [r.info.run_id for r in row_runs(uri).values()]
        browser.get(
            f"{browser.url.split('?')[0]}?orderByKey=metrics.%60t2v_R1%60&workflowType=machine_learning"
        )
        browser.wait_for(lambda: "Sort: t2v_R1" in browser.text(), "the table sorted by t2v_R1")
        eid = client(uri).get_experiment_by_name("smoke").experiment_id
        compare = (
            f"{base}/#/compare-runs?runs={quote(json.dumps(run_ids))}&experiments={quote(json.dumps([eid]))}"
        )
        browser.get(compare)
        browser.wait_for(
            lambda: "Metrics" in browser.text() and "t2v_R1" in browser.text(), "the run comparison"
        )


def test_ui_refuses_what_it_cannot_serve_in_one_line(tmp_path, capsys):
    assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no tracking store at" in err and "clip2video ablation" in err
    (tmp_path / "bad.db").write_bytes(b"garbage" * 100)
    assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path}/bad.db"]) == 1
    assert "not an SQLite database" in capsys.readouterr().err
    assert main(["ui", "--tracking-uri", "http://127.0.0.1:9"]) == 1
    assert "is a server already" in capsys.readouterr().err

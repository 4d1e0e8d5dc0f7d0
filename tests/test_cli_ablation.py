"""``clip2video ablation`` through ``clip2video.cli.main``: records, tables, plots, the MLflow
store, ``--eval-only --checkpoint``, clear errors, and ``--nproc 2`` (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clip2video.cli import main
from clip2video.data.annotations import load_split
from clip2video.engine.records import read_run_record, read_suite_info
from clip2video.metrics import retrieval_metrics
from tests.support.protocol_fixtures import (
    SMOKE_MODELS,
    TINY_BACKBONE,
    assert_same_rows,
    smoke_cli_args,
)
from tests.support.tiny_clip import tiny_official_checkpoint

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class CliRun:
    root: Path
    uri: str
    code: int

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def results(self) -> Path:
        return self.root / "results" / "smoke"


def ablation(root: Path, *extra: str, models: list[str] | None = None) -> int:
    """``clip2video ablation`` on the reduced smoke suite with every output under ``root``."""
    return main(["ablation", *smoke_cli_args(models, root=root), *extra])


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> CliRun:
    """The reduced smoke suite through the command line, tracked in an embedded SQLite store."""
    root = tmp_path_factory.mktemp("cli-smoke")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return CliRun(root, uri, ablation(root, "--tracking-uri", uri))


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ablation", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--suite", "--data-root", "--clip-weights", "--device", "--eval-only", "--checkpoint"):
        assert option in text
    for option in ("--models", "--set", "--runs-dir", "--results-dir", "--tracking-uri", "--no-tracking"):
        assert option in text
    assert "--nproc" in text and "--resume" in text and "smoke" in text


def test_records_tables_and_plots(cli_run):
    assert cli_run.code == 0
    info = read_suite_info(cli_run.runs, "smoke")
    assert info.rows == SMOKE_MODELS and info.protocol == "synthetic"
    for row in SMOKE_MODELS:
        rec = read_run_record(cli_run.runs / "smoke" / row)
        assert rec.extra["trained"] is True and rec.config["train"]["epochs"] == 2
        assert len(rec.extra["history"]) == 2
        assert rec.load_sim().shape == (16, 8)  # 4 test pairs: 8 clips, 2 captions each
    for name in ("table.md", "table.tex", "table.csv"):
        text = (cli_run.results / name).read_text()
        assert all(row in text for row in SMOKE_MODELS), name
    assert "\\begin{tabular}" in (cli_run.results / "table.tex").read_text()
    plots = sorted(cli_run.results.glob("*.png"))
    assert plots, "no plots written"
    for plot in plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC and plot.stat().st_size > 1000, plot.name


def test_command_line_run_equals_the_library_run(cli_run, smoke_reference):
    """Determinism across two runs (one tracked through the CLI, one plain ``run_suite``)."""
    assert_same_rows(smoke_reference.runs, cli_run.runs, "smoke", SMOKE_MODELS)


def test_mlflow_store_holds_the_suite_run_and_one_run_per_row(cli_run):
    """The parent process logs each row from its record: a top-level run tagged with its suite run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cli_run.uri)
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    assert [e.name for e in experiments] == ["smoke"]
    assert experiments[0].tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([experiments[0].experiment_id])
    suites = [r for r in runs if "clip2video.record" not in r.data.tags]
    assert len(suites) == 1 and suites[0].info.run_name == "smoke"
    suite = suites[0]
    assert suite.info.status == "FINISHED" and suite.data.params["train.epochs"] == "2"
    rows = {r.info.run_name: r for r in runs if r.data.tags.get("clip2video.suite_run") == suite.info.run_id}
    assert sorted(rows) == sorted(SMOKE_MODELS) and len(runs) == 1 + len(SMOKE_MODELS)
    for name, run in rows.items():
        assert run.info.status == "FINISHED"
        rec = read_run_record(cli_run.runs / "smoke" / name)
        for key, value in rec.metrics.items():
            assert run.data.metrics[key] == pytest.approx(value), (name, key)
        assert run.data.metrics["order_acc"] == pytest.approx(rec.extra["order_acc"])
        assert run.data.params["train.epochs"] == "2" and run.data.params["model"] == name
        # per-epoch training metrics, at their steps
        history = client.get_metric_history(run.info.run_id, "train/epoch_loss")
        assert len(history) == 2 and history[0].step < history[1].step
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "record")}
        assert {"record/metrics.json", "record/ranks.npz", "record/sim.npz"} <= artifacts


def test_eval_only_with_an_official_checkpoint_evaluates_without_training(tmp_path, capsys):
    from clip2video.data.frames import FrameSampler
    from clip2video.data.text import CaptionTokenizer
    from clip2video.engine.evaluate import evaluate
    from clip2video.models import from_official_checkpoint

    ckpt = tiny_official_checkpoint(
        "clip2video", tmp_path / "pytorch_model.bin.0", seed=5, clip=TINY_BACKBONE, temporal_layers=1
    )
    code = ablation(
        tmp_path, "--eval-only", "--checkpoint", f"clip2video={ckpt}", "--no-tracking", models=["clip2video"]
    )
    assert code == 0, capsys.readouterr().err
    assert read_suite_info(tmp_path / "runs", "smoke").rows == ["clip2video"]
    rec = read_run_record(tmp_path / "runs" / "smoke" / "clip2video")
    assert rec.extra["trained"] is False and "history" not in rec.extra
    assert not (tmp_path / "runs" / "smoke" / "clip2video" / "checkpoints").exists()

    (data,) = (tmp_path / "data").iterdir()
    test = load_split("synthetic", data / "annotations", "test")
    sampler = FrameSampler(extraction_fps=5, stride=1, max_frames=12, image_size=32)
    direct = evaluate(
        from_official_checkpoint(ckpt).eval(),
        test,
        data / "videos",
        sampler,
        CaptionTokenizer(max_words=32),
        protocol="synthetic",
        batch_size=64,
        progress=False,
    )
    assert rec.metrics == direct.metrics
    np.testing.assert_array_equal(rec.load_sim(), direct.sim.float().cpu().numpy())


def test_missing_dataset_folder_names_it_and_data_root(tmp_path, capsys):
    code = main(["ablation", "--suite", "msvd", "--data-root", str(tmp_path / "datasets"), "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 1
    assert str(tmp_path / "datasets" / "msvd" / "annotations") in err and "--data-root" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("setting", "named"),
    [("train.epoch=3", "train.epoch"), ("trian.epochs=3", "trian"), ("eval.tie_policy", "KEY=VALUE")],
)
def test_bad_set_is_an_error_naming_the_key(tmp_path, capsys, setting, named):
    code = main(
        ["ablation", "--suite", "smoke", "--set", setting, "--no-tracking", "--data-root", str(tmp_path)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert named in err and "error" in err
    assert list(tmp_path.iterdir()) == []  # refused before generating any data


def test_set_value_of_the_wrong_type_is_refused(tmp_path, capsys):
    code = main(["ablation", "--suite", "smoke", "--set", "train.epochs=two", "--data-root", str(tmp_path)])
    assert code == 1 and "train.epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_give_the_single_process_metrics(tmp_path, smoke_reference):
    """``--nproc 2`` relaunches under torchrun (gloo on the CPU); same global batch, same numbers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        *smoke_cli_args(),
        "--data-root",
        str(tmp_path / "data"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
        "--no-tracking",
        "--nproc",
        "2",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "clip2video", "ablation", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.distributed.run" in proc.stdout
    assert read_suite_info(tmp_path / "runs", "smoke").rows == SMOKE_MODELS
    (data,) = (tmp_path / "data").iterdir()
    caption_video = load_split("synthetic", data / "annotations", "test").caption_video
    for row in SMOKE_MODELS:
        one = read_run_record(smoke_reference.runs / "smoke" / row)
        two = read_run_record(tmp_path / "runs" / "smoke" / row)
        # the same global batches: equal up to float summation order (all-reduce, sharded encoding)
        assert [h["loss"] for h in two.extra["history"]] == pytest.approx(
            [h["loss"] for h in one.extra["history"]], rel=1e-5
        ), row
        np.testing.assert_allclose(two.load_sim(), one.load_sim(), rtol=0, atol=1e-4, err_msg=row)
        # meanp is blind to frame order and every synthetic test clip's time reversal is in the
        # gallery: their scores tie exactly in the arithmetic but only up to the last bit in floats,
        # so the pessimistic metrics of near-tied queries depend on the summation order. Compared
        # on similarities rounded to 1e-4 (where those ties are exact in both runs) they are equal.
        assert retrieval_metrics(np.round(two.load_sim(), 4), caption_video) == retrieval_metrics(
            np.round(one.load_sim(), 4), caption_video
        ), row
        if one.metrics["t2v_ties"] == two.metrics["t2v_ties"] == 0 and one.metrics["v2t_ties"] == 0:
            assert two.metrics == one.metrics, row
    assert read_run_record(tmp_path / "runs" / "smoke" / "clip2video").metrics["t2v_ties"] == 0
    assert json.loads((tmp_path / "runs" / "smoke" / "suite.json").read_text())["rows"] == SMOKE_MODELS


def test_torchrun_relaunch_command_is_accepted_by_torchrun(monkeypatch):
    """The relaunch forwards the user's arguments without ``--nproc`` (torchrun would refuse it)."""
    from torch.distributed.run import get_args_parser

    from clip2video.commands import ablation as commands

    seen: list[list[str]] = []
    monkeypatch.setattr(commands.subprocess, "call", lambda cmd: seen.append(cmd) or 0)
    user = [
        "ablation",
        "--suite",
        "smoke",
        "--nproc",
        "2",
        "--set",
        "train.epochs=1",
        "--nproc=2",
        "--resume",
    ]
    assert commands.relaunch_under_torchrun(2, user) == 0
    (cmd,) = seen
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(cmd[3:])
    assert args.nproc_per_node == "2" and args.module and args.training_script == "clip2video"
    assert args.training_script_args == [
        "ablation",
        "--suite",
        "smoke",
        "--set",
        "train.epochs=1",
        "--resume",
    ]

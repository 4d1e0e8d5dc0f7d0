"""How a row shares the CPU cores: loader workers (``data.num_workers = -1``) and torch threads
(``[run] threads = 0``), both automatic, and which suites use them."""

from __future__ import annotations

import json
import tomllib

import pytest

import clip2video.data.datasets as datasets
import clip2video.experiments.preflight as preflight
from clip2video.cli import main
from clip2video.commands.eval import eval_suite_settings
from clip2video.data.datasets import resolve_num_workers
from clip2video.experiments.preflight import resolve_threads
from clip2video.experiments.suite import load_suite, suites_dir

REAL_SUITES = ("msrvtt-1k-a", "msrvtt-full", "msvd", "vatex-1k5", "vatex-hgr")


def with_cores(monkeypatch: pytest.MonkeyPatch, cores: int) -> None:
    monkeypatch.setattr(datasets, "available_cores", lambda: cores)
    monkeypatch.setattr(preflight, "available_cores", lambda: cores)


@pytest.mark.parametrize(("cores", "cpu", "cuda"), [(1, 1, 1), (2, 1, 2), (8, 2, 8), (16, 4, 8), (64, 8, 8)])
def test_automatic_loader_workers_leave_the_cpu_model_its_cores(monkeypatch, cores, cpu, cuda):
    with_cores(monkeypatch, cores)
    assert resolve_num_workers(-1, "cpu") == cpu
    assert resolve_num_workers(-1, "cuda") == cuda
    assert resolve_num_workers(-1, "cuda:1") == cuda
    assert resolve_num_workers(-1, "cpu", phased=True) == cuda  # evaluation: decoding takes turns
    assert resolve_num_workers(3, "cpu") == 3 and resolve_num_workers(0, "cuda") == 0
    with pytest.raises(ValueError, match="num_workers must be -1"):
        resolve_num_workers(-2, "cpu")


@pytest.mark.parametrize(
    ("cores", "jobs", "rows", "threads"),
    [
        (2, 0, 1, 2),  # one row (clip2video eval): every core
        (2, 0, 15, 1),  # the ablation's 15 rows on 2 cores: 2 at once, 1 thread each
        (16, 0, 15, 1),
        (16, 0, 4, 4),
        (16, 2, 15, 8),  # explicit jobs: their share
        (16, 1, 15, 16),
        (3, 2, 5, 1),
    ],
)
def test_automatic_threads_are_the_rows_share_of_the_cores(monkeypatch, cores, jobs, rows, threads):
    with_cores(monkeypatch, cores)
    assert resolve_threads(0, jobs, "cpu", rows) == threads
    assert resolve_threads(3, jobs, "cpu", rows) == 3  # an explicit count is kept


def test_real_suites_and_eval_use_automatic_threads_and_synthetic_suites_one():
    for name in REAL_SUITES:
        assert load_suite(name)["run"]["threads"] == 0, name
        assert load_suite(name)["data"]["num_workers"] == -1, name
    for name in ("ablation", "ablation-scratch", "smoke"):  # rows side by side; locks use 1 thread
        assert load_suite(name)["run"]["threads"] == 1, name
        assert load_suite(name)["data"]["num_workers"] == 0, name
    assert eval_suite_settings("msvd", "clip2video", zero_shot=False)["run"]["threads"] == 0
    assert eval_suite_settings("msrvtt-1k-a-7k", "meanp", zero_shot=True)["run"]["threads"] == 0
    shipped = tomllib.loads(suites_dir().joinpath("msvd.toml").read_text(encoding="utf-8"))
    assert shipped["run"]["threads"] == 0


def smoke_meanp(tmp_path, *sets: str) -> int:
    """``clip2video ablation --suite smoke --models meanp`` with ``--set`` overrides, all output under ``tmp_path``."""
    argv = ["ablation", "--suite", "smoke", "--models", "meanp"]
    for item in sets:
        argv += ["--set", item]
    argv += ["--data-root", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
    return main([*argv, "--results-dir", str(tmp_path / "results"), "--no-tracking", "--no-progress"])


def test_a_one_row_run_with_automatic_threads_records_every_core(tmp_path, monkeypatch):
    """The resolved count is what the row runs with and what its fingerprint holds."""
    with_cores(monkeypatch, 2)
    code = smoke_meanp(tmp_path, "run.threads=0", "train.epochs=1")
    assert code == 0
    record = json.loads((tmp_path / "runs" / "smoke" / "meanp" / "config.json").read_text())
    text = json.dumps(record)
    assert '"threads": 2' in text and '"threads": 0' not in text


def test_frames_of_another_size_than_the_backbone_takes_are_one_error_line(tmp_path, capsys):
    """e.g. the synthetic protocol's 32 px frames with a 224 px backbone: named before decoding."""
    code = smoke_meanp(tmp_path, "frames.image_size=48")
    assert code != 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("clip2video: error:")]
    assert len(lines) == 1, lines
    assert "frames.image_size = 48 but the model's CLIP backbone takes 32 px images" in lines[0]
    assert "--set frames.image_size=32" in lines[0]
    assert not (tmp_path / "runs" / "smoke" / "meanp" / "metrics.json").exists()

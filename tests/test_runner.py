"""The suite runner on the reduced smoke suite: determinism and ``--resume`` after an interruption.

The uninterrupted reference run is ``protocol_fixtures.smoke_reference`` (shared with the CLI tests).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
import torch

import clip2video.experiments.row as row_module
import clip2video.experiments.runner as runner
from clip2video.cli import main
from clip2video.engine.checkpoint import load_checkpoint
from clip2video.engine.records import read_run_record, read_suite_info
from clip2video.engine.train import WALL_CLOCK, without_wall_clock
from tests.support.protocol_fixtures import (
    SMOKE_MODELS,
    assert_same_rows,
    run_smoke,
    run_suite_with_tables,
    smoke_cli_args,
    smoke_overrides,
)

REAL_TRAIN = row_module.train


class Interrupted(Exception):
    """Stands for the process dying right after an epoch's checkpoint."""


def watch_training(monkeypatch, stop_row: str | None = None) -> list[tuple[str, bool]]:
    """Wrap the row's ``train``: record (row, resume) per call; interrupt ``stop_row`` after epoch 0.

    Rows run in this process (the torchrun path, ``run_rows_in_process``) so that the wrapper
    sees them; the worker-process path is checked bit for bit against it below.
    """
    monkeypatch.setattr(
        runner, "run_rows", lambda specs, jobs, on_done: runner.run_rows_in_process(specs, on_done)
    )
    calls: list[tuple[str, bool]] = []

    def wrapped(model, dataset, config, *, out_dir, **kwargs):
        row = Path(out_dir).parent.name
        calls.append((row, bool(kwargs.get("resume"))))
        if row == stop_row:

            def stop(epoch: int, record: dict) -> None:
                if epoch == 0:
                    raise Interrupted

            kwargs["on_epoch_end"] = stop
        return REAL_TRAIN(model, dataset, config, out_dir=out_dir, **kwargs)

    monkeypatch.setattr(row_module, "train", wrapped)
    return calls


def test_two_runs_give_identical_records(tmp_path, smoke_reference):
    again = run_smoke(tmp_path)
    assert again.rows == smoke_reference.rows
    assert_same_rows(smoke_reference.runs, again.runs, "smoke", SMOKE_MODELS)
    for row in SMOKE_MODELS:  # the trained weights too
        a = load_checkpoint(smoke_reference.runs / "smoke" / row / "checkpoints" / "last.pt")["model"]
        b = load_checkpoint(again.runs / "smoke" / row / "checkpoints" / "last.pt")["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), row


def resume_with_cli(root: Path) -> int:
    return main(["ablation", *smoke_cli_args(root=root), "--no-tracking", "--resume"])


def test_resume_after_the_first_models_first_epoch_is_exact(tmp_path, monkeypatch, smoke_reference):
    calls = watch_training(monkeypatch, stop_row="meanp")
    with pytest.raises(Interrupted):
        run_smoke(tmp_path)
    assert calls == [("meanp", False)]
    cut = tmp_path / "runs" / "smoke"
    assert load_checkpoint(cut / "meanp" / "checkpoints" / "last.pt")["epoch"] == 0
    assert not (cut / "meanp" / "metrics.json").exists() and not (cut / "clip2video").exists()

    calls = watch_training(monkeypatch)
    assert resume_with_cli(tmp_path) == 0
    # meanp continued from its epoch-0 checkpoint; clip2video had not started
    assert calls == [("meanp", True), ("clip2video", False)]
    assert_same_rows(smoke_reference.runs, tmp_path / "runs", "smoke", SMOKE_MODELS)
    assert read_suite_info(tmp_path / "runs", "smoke").rows == SMOKE_MODELS
    assert (tmp_path / "results" / "smoke" / "table.md").is_file()


@pytest.mark.slow
def test_resume_keeps_finished_rows_and_continues_the_interrupted_one(tmp_path, monkeypatch, smoke_reference):
    calls = watch_training(monkeypatch, stop_row="clip2video")
    with pytest.raises(Interrupted):
        run_smoke(tmp_path)
    assert calls == [("meanp", False), ("clip2video", False)]
    kept = tmp_path / "runs" / "smoke" / "meanp" / "metrics.json"
    before = kept.read_bytes()

    calls = watch_training(monkeypatch)
    assert resume_with_cli(tmp_path) == 0
    assert calls == [("clip2video", True)]  # meanp's finished record is kept, not retrained
    assert kept.read_bytes() == before
    assert_same_rows(smoke_reference.runs, tmp_path / "runs", "smoke", SMOKE_MODELS)


def test_resume_of_a_finished_suite_trains_nothing(tmp_path, monkeypatch, smoke_reference):
    shutil.copytree(smoke_reference.runs, tmp_path / "runs")
    shutil.copytree(smoke_reference.data_root, tmp_path / "data", symlinks=True)
    calls = watch_training(monkeypatch)
    result = run_suite_with_tables(
        "smoke",
        data_root=tmp_path / "data",
        runs_dir=tmp_path / "runs",
        results_dir=tmp_path / "results",
        tracking=False,
        overrides=smoke_overrides(),
        progress=False,
        resume=True,
    )
    assert calls == []
    assert result.rows == smoke_reference.rows
    assert read_run_record(tmp_path / "runs" / "smoke" / "meanp").metrics == {
        k: v for k, v in smoke_reference.rows["meanp"].items() if not k.startswith("order_")
    }


# ----------------------------------------------------------------------------- independent rows


def assert_same_record(a: Path, b: Path) -> None:
    """Two row folders hold the same record bit for bit: metrics.json, config.json, every array."""
    import json

    import numpy as np

    for name in ("metrics.json", "config.json"):
        x, y = json.loads((a / name).read_text()), json.loads((b / name).read_text())
        if name == "metrics.json":  # two data folders: same content, other file identities (mtimes)
            fx, fy = x.pop("fingerprint", None) or {}, y.pop("fingerprint", None) or {}
            assert {k: fx.get(k) for k in ("platform", "code", "settings")} == {
                k: fy.get(k) for k in ("platform", "code", "settings")
            }
            assert fx["data"]["annotations"] == fy["data"]["annotations"]
            for record in (x, y):  # wall-clock times are the only values two identical runs differ in
                record.pop(WALL_CLOCK, None)
                record["history"] = without_wall_clock(record.get("history") or [])
        assert x == y, (a.name, name)
    for name in ("ranks.npz", "sim.npz"):
        with np.load(a / name) as x, np.load(b / name) as y:
            assert sorted(x.files) == sorted(y.files), (a.name, name)
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{a.name} {name} {key}")
                assert x[key].dtype == y[key].dtype


def test_a_rows_record_does_not_depend_on_other_rows_or_the_job_count(tmp_path, smoke_reference):
    """clip2video alone, after meanp in one job, and beside meanp (the reference: auto jobs)."""
    alone = run_smoke(tmp_path / "alone", models=["clip2video"], jobs=1)
    one_job = run_suite_with_tables(
        "smoke",
        data_root=tmp_path / "seq" / "data",
        runs_dir=tmp_path / "seq" / "runs",
        tracking=False,
        overrides=smoke_overrides(),
        progress=False,
        jobs=1,
    )
    assert one_job.jobs == 1
    for runs in (alone.runs, tmp_path / "seq" / "runs"):
        assert_same_record(smoke_reference.runs / "smoke" / "clip2video", runs / "smoke" / "clip2video")
    assert_same_record(
        smoke_reference.runs / "smoke" / "meanp", tmp_path / "seq" / "runs" / "smoke" / "meanp"
    )
    assert runner.auto_jobs("cpu", 1, 2) == min(2, os.cpu_count() or 1)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list the worker processes")
def test_ctrl_c_stops_the_workers_and_resume_finishes_the_suite(tmp_path, smoke_reference):
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "clip2video", "ablation", *smoke_cli_args(root=tmp_path), "--no-tracking"]
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT (so
    # would clip2video): give the command the default disposition a terminal's foreground job has.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first_epoch = list((tmp_path / "runs" / "smoke").glob("*/checkpoints/last.pt"))
    deadline = time.monotonic() + 240
    while not first_epoch and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        first_epoch = list((tmp_path / "runs" / "smoke").glob("*/checkpoints/last.pt"))
    workers = _descendants(proc.pid)
    # Freeze the workers mid-row so that the suite cannot finish between the first checkpoint and
    # the Ctrl-C (a smoke row takes seconds); they get the parent's stop once they run again.
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    assert proc.poll() is None, proc.communicate()[0]
    assert workers
    proc.send_signal(signal.SIGINT)  # the parent only, as a terminal would plus nothing else
    time.sleep(0.5)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    time.sleep(1)
    assert not [p for p in workers if _alive(p)], out
    assert resume_with_cli(tmp_path) == 0
    assert_same_rows(smoke_reference.runs, tmp_path / "runs", "smoke", SMOKE_MODELS)


# ----------------------------------------------------------------------------- seeds, labels


def test_shipped_suites_run_three_seeds_and_smoke_one():
    from clip2video.experiments.suite import load_suite

    for name in ("ablation", "ablation-scratch", "msrvtt-1k-a", "msvd", "vatex-1k5", "vatex-hgr"):
        assert load_suite(name)["seeds"] == [0, 1, 2], name
    assert load_suite("smoke")["seeds"] == [0]


def plan_names(suite, *, eval_only=False, checkpoints=None) -> list[tuple]:
    """(record name, model, trained, checkpoint) of each planned row, seed after seed."""
    from clip2video.experiments.options import RunOptions
    from clip2video.experiments.preflight import plan_rows

    options = RunOptions(suite=suite, eval_only=eval_only, checkpoints=checkpoints or {})
    return [(p.name, p.model, p.trained, p.checkpoint) for p in plan_rows(suite, options)]


def test_rows_of_several_seeds_are_named_model_s_seed():
    from clip2video.experiments.suite import load_suite

    suite = load_suite("smoke", {"models": ["meanp", "tdb"], "seeds": [0, 2]})
    names = [row[0] for row in plan_names(suite)]
    assert names == ["meanp-s0", "tdb-s0", "meanp-s2", "tdb-s2"]
    one = load_suite("smoke", {"models": ["tdb"]})
    assert [row[0] for row in plan_names(one)] == ["tdb"]


def test_summary_and_progress_bars_use_readable_names():
    from clip2video.engine.evaluate import progress_desc
    from clip2video.experiments.suite import load_suite

    result = runner.SuiteResult(
        suite=load_suite("smoke"), runs_dir=Path("runs"), rows={"tdb": {"t2v_R1": 12.5, "order_acc": 50.0}}
    )
    header = result.summary().splitlines()[1]
    assert "t2v R@1" in header and "order acc" in header and "t2v_R1" not in header
    assert progress_desc("tdb s0 reversed", "encode videos") == "tdb s0 reversed: encode videos"
    assert progress_desc(True, "encode videos") == "encode videos"


def test_summary_gives_one_line_per_row_the_mean_over_its_seeds():
    from clip2video.experiments.suite import load_suite

    rows = {
        "meanp-s0": {"t2v_R1": 6.0},
        "meanp-s1": {"t2v_R1": 8.0},
        "tdb-s0": {"t2v_R1": 12.0},
        "tdb-s1": {"t2v_R1": 13.0},
    }
    result = runner.SuiteResult(
        suite=load_suite("smoke"), runs_dir=Path("runs"), rows=rows, row_of={k: k.split("-")[0] for k in rows}
    )
    text = result.summary()
    assert "mean over 2 seeds" in text.splitlines()[0]
    body = [line for line in text.splitlines() if line.startswith("| meanp") or line.startswith("| tdb")]
    assert [line.split("|")[2].strip() for line in body] == ["7.0", "12.5"]


def test_untrained_rows_run_once_whatever_the_seeds():
    """Zero-shot and --eval-only rows depend on no seed: one row each, for the first seed only."""
    from clip2video.experiments.suite import load_suite

    suite = load_suite("msvd", {"seeds": [3, 4]})
    trained = plan_names(suite)
    assert [r[0] for r in trained] == ["meanp-zeroshot"] + [f"{m}-s{s}" for s in (3, 4) for m in suite.models]
    ckpt = {"tdb": Path("tdb.pt")}
    assert plan_names(suite, eval_only=True, checkpoints=ckpt) == [
        ("meanp-zeroshot", "meanp", False, None),
        ("tdb", "tdb", False, Path("tdb.pt")),
    ]

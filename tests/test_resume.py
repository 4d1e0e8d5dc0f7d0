"""Exact resume and atomic checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clip2video.engine import checkpoint as ckpt
from clip2video.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from clip2video.engine.train import train
from tests.support.train_standins import StandInModel, ToyPairs, cfg, recall_at_1

REPO = Path(__file__).resolve().parents[1]


class Killed(Exception):
    """Stands for the process dying between two epochs."""


def run(out_dir: Path, *, resume: bool = False, stop_after: int | None = None, init_seed: int = 0):
    torch.manual_seed(init_seed)
    model = StandInModel(tab=True, dropout=0.2)  # dropout: the resumed run must restore the RNG
    data = ToyPairs(12)

    def stop(epoch, record):
        if stop_after is not None and epoch == stop_after:
            raise Killed

    config = cfg(epochs=3, grad_accum=2, select_on="val")
    result = train(
        model,
        data,
        config,
        out_dir=out_dir,
        val_fn=lambda m, e: recall_at_1(m, data),
        resume=resume,
        on_epoch_end=stop,
    )
    return model, result


def assert_same_run(a, b):
    from clip2video.engine.train import without_wall_clock

    (model_a, res_a), (model_b, res_b) = a, b
    for k, v in model_a.state_dict().items():
        assert torch.equal(v, model_b.state_dict()[k]), k
    assert res_a.final_metrics == res_b.final_metrics
    assert res_a.best_epoch == res_b.best_epoch
    assert without_wall_clock(res_a.history) == without_wall_clock(res_b.history)  # times differ


def test_resume_after_interrupt_is_exact(tmp_path):
    full = run(tmp_path / "full")
    with pytest.raises(Killed):
        run(tmp_path / "cut", stop_after=0)
    state = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert state["epoch"] == 0 and state["data_order"]["next_epoch"] == 1
    resumed = run(tmp_path / "cut", resume=True, init_seed=99)  # different init: the checkpoint restores it
    assert_same_run(full, resumed)
    # the history's per-step losses show the run really continued (3 epochs x 3 steps)
    assert [len(r["step_losses"]) for r in resumed[1].history] == [3, 3, 3]


def test_resume_of_a_finished_run_returns_its_result(tmp_path):
    full = run(tmp_path)
    again = run(tmp_path, resume=True, init_seed=7)
    assert_same_run(full, again)


def test_resume_after_sigkill_between_epochs(tmp_path):
    """A real kill: the child process SIGKILLs itself right after epoch 1's checkpoint."""
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from tests.test_resume import run
        import clip2video.engine.train as T
        original = T.save_checkpoint
        def save_then_die(path, state):
            out = original(path, state)
            if path.name == "last.pt" and state["epoch"] == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        T.save_checkpoint = save_then_die
        run(__import__("pathlib").Path({str(tmp_path / "cut")!r}))
        """
    )
    # the child imports this module by its package name, with the repository root on its path
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = run(tmp_path / "cut", resume=True)
    assert_same_run(run(tmp_path / "full"), resumed)


def test_resume_refuses_changed_settings_and_missing_checkpoint(tmp_path):
    data = ToyPairs(8)
    train(StandInModel(), data, cfg(epochs=1), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="lr"):
        train(StandInModel(), data, cfg(epochs=1, lr=0.5), out_dir=tmp_path, resume=True)
    train(StandInModel(), data, cfg(epochs=1, progress=True, num_workers=0), out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(StandInModel(), data, cfg(), out_dir=tmp_path / "empty", resume=True)


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 0, "w": torch.ones(3)})

    def dying_save(obj, handle):
        handle.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 1, "w": torch.zeros(3)})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 0 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left behind


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(bad)
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a clip2video"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    import random

    import numpy as np

    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.random(), np.random.rand(), torch.rand(5)  # move every generator on
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert os.listdir(tmp_path) == ["rng.pt"]

"""The suite runner on the reduced smoke suite: determinism and ``--resume`` after an interruption.

The uninterrupted reference run is ``protocol_fixtures.smoke_reference`` (shared with the CLI tests).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from protocol_fixtures import (
    SMOKE_MODELS,
    assert_same_rows,
    run_smoke,
    run_suite_with_tables,
    smoke_cli_args,
    smoke_overrides,
    smoke_reference,  # noqa: F401 (a fixture)
)

import clip2video.experiments.runner as runner
from clip2video.cli import main
from clip2video.engine.checkpoint import load_checkpoint
from clip2video.engine.records import read_run_record, read_suite_info

REAL_TRAIN = runner.train


class Interrupted(Exception):
    """Stands for the process dying right after an epoch's checkpoint."""


def watch_training(monkeypatch, stop_row: str | None = None) -> list[tuple[str, bool]]:
    """Wrap the runner's ``train``: record (row, resume) per call; interrupt ``stop_row`` after epoch 0."""
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

    monkeypatch.setattr(runner, "train", wrapped)
    return calls


def test_two_runs_give_identical_records(tmp_path, smoke_reference):  # noqa: F811
    again = run_smoke(tmp_path)
    assert again.rows == smoke_reference.rows
    assert_same_rows(smoke_reference.runs, again.runs, "smoke", SMOKE_MODELS)
    for row in SMOKE_MODELS:  # the trained weights too
        a = load_checkpoint(smoke_reference.runs / "smoke" / row / "checkpoints" / "last.pt")["model"]
        b = load_checkpoint(again.runs / "smoke" / row / "checkpoints" / "last.pt")["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), row


def resume_with_cli(root: Path) -> int:
    return main(["ablation", *smoke_cli_args(root=root), "--no-tracking", "--resume"])


def test_resume_after_the_first_models_first_epoch_is_exact(tmp_path, monkeypatch, smoke_reference):  # noqa: F811
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
def test_resume_keeps_finished_rows_and_continues_the_interrupted_one(tmp_path, monkeypatch, smoke_reference):  # noqa: F811
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


def test_resume_of_a_finished_suite_trains_nothing(tmp_path, monkeypatch, smoke_reference):  # noqa: F811
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

"""Issue 10's silent-wrong-result cases the runner owns: a record, checkpoint or cache entry is
valid only for the exact settings, data and code that produced it.

Each test fails on the round-1 main (checked with ``PYTHONPATH=/work/main``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2video.cli import main
from clip2video.engine.train import train
from tests.support.protocol_fixtures import smoke_cli_args
from tests.support.train_standins import StandInModel, ToyPairs, cfg

ROW = ["meanp"]


def ablation(root: Path, *extra: str) -> int:
    return main(["ablation", *smoke_cli_args(models=ROW, root=root), "--no-tracking", *extra])


def record(root: Path) -> dict:
    return json.loads((root / "runs" / "smoke" / "meanp" / "metrics.json").read_text())


def test_resume_recomputes_a_finished_row_whose_settings_changed(tmp_path, capsys):
    """Item 1: --resume used to report a finished epochs=2 row as the epochs=3 result."""
    assert ablation(tmp_path) == 0
    assert len(record(tmp_path)["history"]) == 2
    capsys.readouterr()
    assert ablation(tmp_path, "--set", "train.epochs=3", "--resume") == 0
    out = capsys.readouterr().out
    assert "recomputing meanp" in out and "settings.train.epochs: 2 -> 3" in out
    assert len(record(tmp_path)["history"]) == 3
    # ... and the epochs=3 record left behind is not reused for an epochs=2 --resume either
    assert ablation(tmp_path, "--resume") == 0
    assert "settings.train.epochs: 3 -> 2" in capsys.readouterr().out
    assert len(record(tmp_path)["history"]) == 2


def test_resume_keeps_a_matching_record_untouched(tmp_path, capsys):
    assert ablation(tmp_path) == 0
    metrics = tmp_path / "runs" / "smoke" / "meanp" / "metrics.json"
    before = metrics.read_bytes()
    fingerprint = json.loads(before)["fingerprint"]
    assert set(fingerprint) == {"platform", "code", "settings", "data"}
    assert {"cpu_capability", "threads", "torch"} <= set(fingerprint["platform"])
    capsys.readouterr()
    assert ablation(tmp_path, "--resume") == 0
    assert "recomputing" not in capsys.readouterr().out
    assert metrics.read_bytes() == before


def test_resume_refuses_a_checkpoint_written_under_other_settings(tmp_path, capsys):
    """Item 2: an interrupted 12-frame row was continued on 6 frames, and its record said 6."""
    assert ablation(tmp_path) == 0
    row = tmp_path / "runs" / "smoke" / "meanp"
    (row / "metrics.json").unlink()  # the process died after training, before the record
    last = row / "checkpoints" / "last.pt"
    before = last.read_bytes()
    capsys.readouterr()
    assert ablation(tmp_path, "--set", "frames.max_frames=6", "--resume") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("clip2video: error: ")  # (progress bars aside)
    err = errors[0]
    assert str(last) in err and "frames.max_frames: 12 -> 6" in err and "without --resume" in err
    assert last.read_bytes() == before and not (row / "metrics.json").exists()


def test_best_epoch_after_resuming_a_finished_training(tmp_path):
    """Item 9: select_on=final keeps the last epoch, also when resuming a run that had finished."""
    data = ToyPairs(8)

    def falling(model, epoch):  # validation gets worse: the best-val epoch (0) is not the selected one
        return {"t2v_R1": 10.0 - epoch}

    first = train(StandInModel(), data, cfg(epochs=2), out_dir=tmp_path, val_fn=falling)
    again = train(StandInModel(), data, cfg(epochs=2), out_dir=tmp_path, val_fn=falling, resume=True)
    assert first.best_epoch == again.best_epoch == 1


def test_resume_after_training_finished_writes_the_uninterrupted_record(tmp_path):
    assert ablation(tmp_path) == 0
    row = tmp_path / "runs" / "smoke" / "meanp"
    full = record(tmp_path)
    (row / "metrics.json").unlink()
    assert ablation(tmp_path, "--resume") == 0
    again = record(tmp_path)
    assert again["best_epoch"] == again["history"][-1]["epoch"] == 1
    assert again == full


def test_embedding_cache_misses_when_a_frame_image_is_overwritten(tmp_path):
    """Item 3: a frame folder was keyed by its own size and mtime, which an in-place write keeps."""
    from PIL import Image

    from clip2video.data.annotations import load_split
    from clip2video.data.protocols import get_protocol
    from clip2video.data.synthetic import generate_synthetic
    from clip2video.engine.cache import EmbeddingCache
    from clip2video.engine.evaluate import evaluate
    from tests.support.eval_standins import real_model

    root = generate_synthetic(tmp_path / "syn", seed=5, num_train=0, num_val=0, num_test_pairs=2)
    proto = get_protocol("synthetic")
    split = load_split(proto, root / "annotations", "test")
    rng = np.random.default_rng(0)
    for vid in split.video_ids:  # frame folders instead of the mp4 files
        (root / "videos" / f"{vid}.mp4").unlink()
        folder = root / "videos" / vid
        folder.mkdir()
        for i in range(1, 7):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:08d}.jpg")
    model, calls = real_model("meanp"), Counter()
    original = model.encode_video

    def counted(*args):
        calls["video"] += 1
        return original(*args)

    model.encode_video = counted
    cache = EmbeddingCache(tmp_path / "cache")
    kwargs = dict(protocol=proto, cache=cache, progress=False)
    first = evaluate(model, split, root / "videos", **kwargs)
    calls.clear()
    evaluate(model, split, root / "videos", **kwargs)
    assert calls == Counter(), "an unchanged folder hits"
    image = root / "videos" / split.video_ids[0] / "00000003.jpg"
    folder_stat = image.parent.stat()
    with open(image, "wb") as handle:  # overwrite in place: the folder's size and mtime stay
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(handle, format="JPEG")
    assert image.parent.stat().st_mtime_ns == folder_stat.st_mtime_ns
    second = evaluate(model, split, root / "videos", **kwargs)
    assert calls["video"] >= 1, "the overwritten frame must be decoded and encoded again"
    assert not torch.equal(first.sim, second.sim)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_are_part_of_the_row_settings(threads):
    from clip2video.experiments.row import resolved_row_settings
    from clip2video.experiments.suite import load_suite

    suite = load_suite("smoke")
    settings = resolved_row_settings(
        suite.settings,
        model="tdb",
        seed=0,
        trained=True,
        checkpoint=None,
        clip_weights=None,
        device="cpu",
        threads=threads,
    )
    assert settings["run"] == {"threads": threads}
    assert "models" not in settings and "seeds" not in settings and "num_workers" not in settings["data"]
    assert settings["row"] == {
        "model": "tdb",
        "seed": 0,
        "trained": True,
        "checkpoint": None,
        "device": "cpu",
    }


def test_an_unknown_post_processor_fails_before_any_training(tmp_path, capsys):
    assert ablation(tmp_path, "--set", 'eval.postprocess=["dsl", "nope"]') == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("clip2video: error: ")
    assert "eval.postprocess: Unknown post-processor 'nope'. Available: " in errors[0]
    assert not (tmp_path / "runs" / "smoke" / "meanp").exists()

"""Every checkpoint the harness writes loads back (issue 11 §3), and a bad file is one clear line (issue 10)."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from clip2video.cli import main as cli_main
from clip2video.engine.checkpoint import CheckpointError, load_model_state, save_checkpoint
from clip2video.errors import WeightsError
from clip2video.models import create_model, from_official_checkpoint
from clip2video.models.backbone import read_clip_state_dict
from tests.support.tiny_clip import perturb_, tiny_clip_config

MODELS = ["meanp", "seqtransf", "tdb", "tab", "clip2video"]


def _tiny(name: str) -> torch.nn.Module:
    model = create_model(name, clip=tiny_clip_config(), temporal_layers=2, center_k=3)
    return perturb_(model, seed=3).eval()


def _forms(model: torch.nn.Module) -> dict[str, object]:
    """Every form in which the harness writes a model's weights."""
    return {
        "state_dict": model.state_dict(),
        "trainer": {"format": 1, "model": model.state_dict(), "epoch": 0},
        "official_fp32": model.official_state_dict(clip_dtype=torch.float32),
        "official_fp16": model.official_state_dict(),
        "ddp": {f"module.{k}": v for k, v in model.state_dict().items()},
    }


@pytest.mark.parametrize("name", MODELS)
def test_every_written_form_loads_back(name, tmp_path):
    model = _tiny(name)
    reference = model.state_dict()
    for form, state in _forms(model).items():
        path = tmp_path / f"{form}.pt"
        if form == "trainer":
            save_checkpoint(path, {"model": state["model"], "epoch": 0})
        else:
            torch.save(state, path)
        loaded = from_official_checkpoint(path, variant=name, center_weight=0.5).state_dict()
        assert loaded.keys() == reference.keys(), form
        for key, value in reference.items():
            if form == "official_fp16" and key.startswith("clip."):
                torch.testing.assert_close(loaded[key], value, rtol=1e-3, atol=1e-3)
            else:
                assert torch.equal(loaded[key], value), f"{form}: {key}"


def test_eval_only_from_each_trained_checkpoint_reproduces_the_row(tmp_path):
    """Train the smoke rows briefly, then an eval-only run from each last.pt gives the same metrics."""
    from clip2video.engine.records import read_suite_records
    from clip2video.experiments.runner import run_suite

    common = {"data_root": tmp_path / "data", "tracking": False, "progress": False}
    overrides = {"train": {"epochs": 1}, "eval": {"postprocess": []}}
    trained = run_suite("smoke", runs_dir=tmp_path / "trained", overrides=overrides, **common)
    checkpoints = {m: tmp_path / "trained" / "smoke" / m / "checkpoints" / "last.pt" for m in MODELS}
    again = run_suite(
        "smoke",
        runs_dir=tmp_path / "again",
        overrides=overrides,
        eval_only=True,
        checkpoints=checkpoints,
        **common,
    )
    assert set(trained.rows) == set(again.rows) == set(MODELS)
    for model in MODELS:
        assert again.rows[model] == trained.rows[model], model
    sims = {r.name: r.load_sim() for r in read_suite_records(tmp_path / "trained", "smoke")}
    for record in read_suite_records(tmp_path / "again", "smoke"):
        assert (record.load_sim() == sims[record.name]).all(), record.name


# ----------------------------------------------------------------------------- bad files (issue 10)


def _not_checkpoints(tmp_path):
    real = tmp_path / "real.pt"
    torch.save(_tiny("meanp").state_dict(), real)
    blob = real.read_bytes()
    files = {
        "random.bin": bytes(range(256)) * 7,
        "text.txt": b"this is a text file, not a checkpoint\n",
        "truncated.pt": blob[: len(blob) // 2],
        "empty.pt": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save(torch.zeros(3, 4), tmp_path / "tensor.pt")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("hello.txt", "not a torch archive")
    (tmp_path / "other.zip").write_bytes(buf.getvalue())
    return [tmp_path / n for n in [*files, "tensor.pt", "other.zip"]]


def _one_clear_line(message: str, path) -> None:
    assert "\n" not in message, message
    assert str(path) in message, message
    assert "the given state dict" not in message and "weights_only" not in message, message


def test_a_checkpoint_that_is_not_one_is_one_clear_line(tmp_path):
    for path in _not_checkpoints(tmp_path):
        with pytest.raises(WeightsError) as info:
            from_official_checkpoint(path, variant="meanp")
        _one_clear_line(str(info.value), path)
        assert "pass" in str(info.value)


def test_clip_weights_that_are_not_a_checkpoint_are_one_clear_line(tmp_path):
    for path in _not_checkpoints(tmp_path):
        with pytest.raises(WeightsError) as info:
            read_clip_state_dict(path)
        _one_clear_line(str(info.value), path)
        assert "ViT-B-32.pt" in str(info.value) or "torch.save" in str(info.value)


def test_cli_eval_only_with_a_bad_checkpoint_exits_with_one_line(tmp_path, capsys):
    bad = tmp_path / "random.bin"
    bad.write_bytes(bytes(range(256)) * 3)
    argv = [
        "ablation",
        "--suite",
        "smoke",
        "--models",
        "meanp",
        "--eval-only",
        "--checkpoint",
        f"meanp={bad}",
    ]
    argv += ["--data-root", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"), "--no-tracking"]
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code != 0
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith("clip2video: error:") and str(bad) in errors[0], err


def test_resuming_after_an_architecture_change_is_one_clear_line(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": _tiny("tdb").state_dict()})
    wider = create_model("tdb", clip=tiny_clip_config(embed_dim=128), temporal_layers=2)
    state = torch.load(path, weights_only=True)["model"]
    with pytest.raises(CheckpointError) as info:
        load_model_state(wider, state, path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "--resume" in message
    assert "shape" in message
    other = create_model("meanp", clip=tiny_clip_config())
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model_state(other, state, path)

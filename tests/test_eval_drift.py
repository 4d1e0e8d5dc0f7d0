"""The evaluation-drift layer: seeded tiny checkpoints on fixed synthetic data.

It must pass under every CPU kernel set and thread count, and fail when a model formula, the frame
sampler, the tokenizer or the ranking core changes.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2video.errors import DriftError
from clip2video.experiments import drift_runs as dr
from clip2video.experiments.suite import load_suite
from clip2video.report import eval_drift as ed

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCK = PROJECT_ROOT / "baselines" / "locked" / "eval-smoke.json"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-drift-data")


@pytest.fixture(scope="module")
def lock() -> dict:
    return ed.load_eval_lock(LOCK)


def _subset(lock: dict, models: list[str]) -> tuple[dict, dict]:
    """A lock and suite settings restricted to ``models`` (consistently, so settings still match)."""
    sub = copy.deepcopy(lock)
    sub["models"] = {m: sub["models"][m] for m in models}
    sub["settings"]["models"] = list(models)
    sub["settings"]["weights_seeds"] = {m: sub["settings"]["weights_seeds"][m] for m in models}
    settings = load_suite("smoke").settings.to_dict()
    settings["models"] = list(models)
    return sub, settings


def _run(lock: dict, settings: dict, data_root: Path) -> list[ed.EvalDrift]:
    run = dr.run_eval_layer(settings, data_root, seeds=lock["settings"]["weights_seeds"])
    return ed.compare_eval(lock, run)


def test_seeded_weights_do_not_depend_on_torch_rng():
    settings = dr.eval_settings(load_suite("smoke").settings.to_dict())
    torch.manual_seed(1)
    a = dr.build_seeded_model("clip2video", settings, 7).state_dict()
    torch.manual_seed(2)
    b = dr.build_seeded_model("clip2video", settings, 7).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = dr.build_seeded_model("meanp", settings, 7).state_dict()
    # Shared parameters get the same draws in every model; another seed gives other values.
    assert torch.equal(a["clip.visual.proj"], c["clip.visual.proj"])
    d = dr.build_seeded_model("meanp", settings, 8).state_dict()
    assert not torch.equal(c["clip.visual.proj"], d["clip.visual.proj"])
    expected = dr._draw("clip.visual.proj", tuple(c["clip.visual.proj"].shape), 7)
    assert np.array_equal(c["clip.visual.proj"].numpy(), expected)


def test_the_committed_lock_matches(lock, data_root):
    run = dr.run_eval_layer(
        load_suite("smoke").settings.to_dict(), data_root, seeds=lock["settings"]["weights_seeds"]
    )
    assert ed.compare_eval(lock, run) == []
    assert set(run.models) == {"meanp", "seqtransf", "tdb", "tab", "clip2video"}
    for name, model in run.models.items():
        assert dr.rank_margin(model.sim, *_labels(data_root, run.settings)) >= dr.RANK_MARGIN, name


def _labels(data_root: Path, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    from clip2video.data.annotations import load_split
    from clip2video.data.synthetic import load_twins

    annotations = dr.data_folder(data_root, settings) / "annotations"
    split = load_split("synthetic", annotations, "test")
    return np.asarray(split.caption_video), load_twins(annotations, split.video_ids)


def test_similarity_tolerance_and_exact_metrics(lock):
    settings = copy.deepcopy(lock["settings"])
    models = {
        name: dr.ModelEval(metrics=dict(m["metrics"]), sim=np.asarray(m["sim"], dtype=np.float32))
        for name, m in lock["models"].items()
    }
    run = dr.EvalRun(settings=settings, models=models)
    assert ed.compare_eval(lock, run) == []
    run.models["tdb"].sim = run.models["tdb"].sim * np.float32(1 + 2e-6)  # rounding noise: passes
    assert ed.compare_eval(lock, run) == []
    run.models["tdb"].sim = run.models["tdb"].sim * np.float32(1 + 3e-5)
    drifts = ed.compare_eval(lock, run)
    assert [(d.model, d.what.split("[")[0]) for d in drifts] == [("tdb", "sim")]
    assert "1e-05" in str(drifts[0]) and "entries moved" in str(drifts[0])
    run.models["tab"].metrics["t2v_R5"] += 1e-12  # metrics are exact
    assert ("tab", "t2v_R5") in [(d.model, d.what) for d in ed.compare_eval(lock, run)]
    run.settings["frames"]["max_frames"] = 6
    assert any(
        d.what == "settings" and "frames.max_frames" in d.tolerance for d in ed.compare_eval(lock, run)
    )


def _perturb_normalize(monkeypatch):
    import torch.nn.functional as F

    from clip2video.models import heads

    monkeypatch.setattr(heads, "normalize", lambda x: F.normalize(x, dim=-1) * (1 + 1e-4))


def _perturb_tdb(monkeypatch):
    from clip2video.models import heads

    original = heads.TemporalDifferenceBlock.differences

    def flipped(self, x, mask, positions):
        return -original(self, x, mask, positions)

    monkeypatch.setattr(heads.TemporalDifferenceBlock, "differences", flipped)


def _perturb_sampler(monkeypatch):
    from clip2video.data.frames import FrameSampler

    original = FrameSampler.pick

    def shifted(self, n_extracted, rng=None):
        return [min(i + 1, n_extracted - 1) for i in original(self, n_extracted, rng)]

    monkeypatch.setattr(FrameSampler, "pick", shifted)


def _perturb_tokenizer(monkeypatch):
    from clip2video.data.text import CaptionTokenizer

    original = CaptionTokenizer.encode
    monkeypatch.setattr(
        CaptionTokenizer, "encode", lambda self, caption, index=0: original(self, caption + " .", index)
    )


def _perturb_ranking(monkeypatch):
    from clip2video.metrics import counting

    original = counting._rank
    monkeypatch.setattr(counting, "_rank", lambda h, e, b, p: original(h, e, b, p) + (h == 0))


@pytest.mark.parametrize(
    ("perturb", "models", "sim_moves"),
    [
        (_perturb_normalize, ["meanp", "tab"], True),
        (_perturb_tdb, ["tdb", "clip2video"], True),
        (_perturb_sampler, ["meanp", "tdb"], True),
        (_perturb_tokenizer, ["seqtransf"], True),
        (_perturb_ranking, ["meanp", "clip2video"], False),
    ],
    ids=["model-formula", "tdb-formula", "frame-sampler", "tokenizer", "ranking-core"],
)
def test_a_changed_component_is_drift(monkeypatch, lock, data_root, perturb, models, sim_moves):
    sub, settings = _subset(lock, models)  # unperturbed, these models match (test_the_committed_lock_matches)
    perturb(monkeypatch)
    drifts = _run(sub, settings, data_root)
    assert {d.model for d in drifts} == set(models), [str(d) for d in drifts]
    assert not any(d.what == "settings" for d in drifts)
    moved_sims = {d.model for d in drifts if d.what.startswith("sim")}
    assert moved_sims == (set(models) if sim_moves else set())
    if not sim_moves:
        assert all(d.tolerance == "exact" for d in drifts)


def test_missing_or_malformed_lock_is_one_clear_error(tmp_path):
    with pytest.raises(DriftError, match="--update"):
        ed.load_eval_lock(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe not json")
    with pytest.raises(DriftError, match="bad.json"):
        ed.load_eval_lock(bad)
    bad.write_text('{"models": {"meanp": {"metrics": {}}}}')
    with pytest.raises(DriftError, match="not an evaluation-drift lock"):
        ed.load_eval_lock(bad)


def test_a_suite_without_a_tiny_backbone_is_refused():
    settings = load_suite("smoke").settings.to_dict()
    settings["backbone"]["clip"] = "ViT-B-32"
    with pytest.raises(DriftError, match="--layer train"):
        dr.eval_settings(settings)


def test_a_suite_with_other_frame_sampling_is_refused():
    """The lock records max_frames and image_size; fps and stride are the synthetic protocol's."""
    settings = load_suite("smoke").settings.to_dict()
    assert settings["frames"]["stride"] == 1 and settings["frames"]["extraction_fps"] == 5.0
    settings["frames"]["stride"] = 2
    with pytest.raises(DriftError, match="frames.stride = 2"):
        dr.eval_settings(settings)


def _cpu_has_avx512() -> bool:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return "AVX512" in out.stdout


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("capability", ["avx2", "avx512", "default"])
def test_the_gate_passes_on_every_kernel_set_and_thread_count(capability, threads, data_root):
    """``clip2video drift --layer eval`` in a fresh process under each ATEN_CPU_CAPABILITY and thread count."""
    if capability == "avx512" and not _cpu_has_avx512():
        pytest.skip("this CPU has no AVX-512: torch cannot use the avx512 kernels here")
    env = {
        **os.environ,
        "ATEN_CPU_CAPABILITY": capability,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "clip2video", "drift", "--layer", "eval", "--suite", "smoke"]
    cmd += ["--baselines", str(LOCK.parent), "--data-root", str(data_root)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    # The kernel set and thread count really took effect in that process.
    assert f"cpu_capability={capability.upper()}, threads={threads}" in out.stdout, out.stdout
    assert "matches" in out.stdout


def test_a_missing_lock_names_the_working_directory_it_was_looked_for_in(tmp_path, monkeypatch, capsys):
    """The default --baselines is relative: from another folder the error says where it looked."""
    from clip2video.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["drift", "--suite", "smoke", "--layer", "eval"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clip2video: error: no evaluation-drift lock at baselines")
    assert f"under the working directory {tmp_path}" in err[0] and "--baselines DIR" in err[0]

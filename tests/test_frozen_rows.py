"""Frozen-backbone rows in the real pipeline (``[train] backbone = "frozen"``, issue 16 §1).

A suite of the smoke size runs through the command line with a tiny pretrained backbone (a tiny
CLIP's weights saved as ``.npz`` here, not the 13 MB shipped file): the runner computes the
features once per suite (three splits, one backbone, however many rows), each row's worker reads
them, a frozen row's record equals H1's engine-level frozen path for the same seed, ``meanp`` (no
head parameter) is recorded as evaluated untrained, ``--resume`` keeps the rows, and the w table
of a frozen clip2video row is that row at w = 0.5 exactly. The checks before work refuse a frozen
backbone without pretrained weights and accept shipped weights.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import clip2video.engine.features as features_module
from clip2video.cli import main
from clip2video.engine.records import read_run_record
from clip2video.engine.train import without_wall_clock
from clip2video.models.shipped import write_npz
from clip2video.pipeline import CheckFailed, RunOptions, check
from clip2video.report.weights import combine_parts
from tests.support.protocol_fixtures import SMOKE_SETTINGS, TINY_BACKBONE

ROWS = ["meanp", "tdb", "clip2video"]
SUITE = """
base = "smoke"
name = "frozen"
models = ["meanp", "tdb", "clip2video"]

[backbone]
clip_weights = "{weights}"

[train]
backbone = "frozen"

[[tables]]
name = "weights"
kind = "weights"
row = "clip2video"
weights = [0.0, 0.5, 1.0]
reference = 0.5
"""


def pretrained_npz(path: Path) -> Path:
    """A tiny CLIP's weights as a ``.npz`` (what ``clip2video pretrain`` writes): "pretrained" for the
    harness, which only needs weights that are not a random initialisation of the row."""
    from clip2video.models import create_model

    torch.manual_seed(1234)
    model = create_model("meanp", clip=TINY_BACKBONE, clip_weights=None)
    return write_npz(path, model.clip.state_dict())


def suite_file(root: Path, weights: Path) -> Path:
    path = root / "frozen.toml"
    path.write_text(SUITE.format(weights=weights))
    return path


def overrides() -> dict[str, dict]:
    """The reduced smoke suite's settings, with the time reversal kept (it reads the features too)."""
    out = json.loads(json.dumps(SMOKE_SETTINGS))
    out["eval"].pop("time_reversal")
    return out


def argv(root: Path, suite: Path, *extra: str) -> list[str]:
    args = ["ablation", "--suite", str(suite), "--no-tracking", "--no-progress", "--reference", "none"]
    for section, values in overrides().items():
        for key, value in values.items():
            args += ["--set", f"{section}.{key}={json.dumps(value)}"]
    args += ["--data-root", str(root / "data"), "--runs-dir", str(root / "runs")]
    args += ["--results-dir", str(root / "results"), "--jobs", "2"]
    return [*args, *extra]


class FrozenRun:
    """One run of the frozen suite through the CLI (rows in worker processes), counting the
    features the parent computed (per split) on each call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.weights = pretrained_npz(root / "tiny.npz")
        self.suite = suite_file(root, self.weights)
        self.computed: collections.Counter[str] = collections.Counter()

    def run(self, *extra: str) -> int:
        real = features_module._compute
        self.computed.clear()

        def counted(model, split, *args, **kwargs):
            self.computed[split.split] += 1
            return real(model, split, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(features_module, "_compute", counted)
            return main(argv(self.root, self.suite, *extra))

    def record(self, row: str):
        return read_run_record(self.root / "runs" / "frozen" / row)


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory: pytest.TempPathFactory) -> FrozenRun:
    run = FrozenRun(tmp_path_factory.mktemp("frozen"))
    assert run.run() == 0
    run.first_computed = dict(run.computed)
    return run


# ----------------------------------------------------------------------------- the suite run


@pytest.mark.slow
def test_features_are_computed_once_per_suite_and_each_row_reads_them(frozen_run):
    # one backbone: each split once in the parent, for three rows (none in the workers: they only read)
    assert frozen_run.first_computed == {"train": 1, "val": 1, "test": 1}
    cache = frozen_run.root / "runs" / ".feature-cache"
    assert len(list(cache.glob("*.pt"))) == 3
    for row in ROWS:
        rec = frozen_run.record(row)
        assert rec.extra["backbone"] == "frozen" and rec.config["train"]["backbone"] == "frozen"
        assert rec.config["run"]["threads"] == 1


@pytest.mark.slow
def test_meanp_is_recorded_untrained_with_its_note_and_the_tables_say_so(frozen_run):
    meanp = frozen_run.record("meanp")
    assert meanp.extra["trained"] is False
    assert "no trainable parameters with a frozen backbone" in meanp.extra["frozen_untrained"]
    assert (
        "history" not in meanp.extra
        and not (frozen_run.root / "runs" / "frozen" / "meanp" / "checkpoints").exists()
    )
    for row in ("tdb", "clip2video"):
        rec = frozen_run.record(row)
        assert rec.extra["trained"] is True and "frozen_untrained" not in rec.extra
        assert len(rec.extra["history"]) == SMOKE_SETTINGS["train"]["epochs"]
        assert (frozen_run.root / "runs" / "frozen" / row / "checkpoints" / "last.pt").is_file()
    table = (frozen_run.root / "results" / "frozen" / "table.md").read_text()
    assert "Frozen backbone (train.backbone = frozen)" in table
    assert "`meanp`: no trainable parameters with a frozen backbone, evaluated as is" in table


@pytest.mark.slow
def test_a_frozen_rows_record_equals_the_engine_level_frozen_path(frozen_run):
    """H1's functions by hand (features of the three splits, the heads trained by the unchanged
    trainer over them, the test split from the features): the row's record, bit for bit."""
    from clip2video.data.annotations import load_split
    from clip2video.data.frames import FrameSampler
    from clip2video.data.protocols import get_protocol
    from clip2video.data.synthetic import extra_metrics
    from clip2video.data.text import CaptionTokenizer
    from clip2video.engine.features import (
        FeatureBank,
        FeatureModel,
        compute_features,
        encode_features,
        train_heads,
    )
    from clip2video.engine.scoring import evaluate_embeddings, similarity_part_matrices
    from clip2video.engine.train import TrainConfig
    from clip2video.experiments.preflight import model_kwargs
    from clip2video.experiments.suite import load_suite
    from clip2video.models.registry import create_model_from_options

    rec = frozen_run.record("clip2video")
    settings = load_suite(frozen_run.suite, overrides()).settings
    assert rec.config["train"] == settings.train.to_dict()
    protocol = get_protocol("synthetic")
    data = next((frozen_run.root / "data").glob("synthetic-*"))
    splits = {s: load_split(protocol, data / "annotations", s) for s in ("train", "val", "test")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = create_model_from_options("clip2video", model_kwargs(settings, None))
        feats = compute_features(
            model,
            splits,
            data / "videos",
            FrameSampler.from_settings(settings.frames),
            CaptionTokenizer.from_settings(settings.text),
        )
        fm = FeatureModel(model, FeatureBank(feats))
        e = settings.eval
        ranking = {"tie_policy": e.tie_policy, "v2t": e.v2t, "recall_ks": list(e.recall_ks)}

        def val_fn(_model, _epoch):
            return dict(
                evaluate_embeddings(model, encode_features(fm, "val"), keep_sim=False, **ranking).metrics
            )

        config = TrainConfig.from_settings(
            settings.train, seed=0, device="cpu", progress=False, num_workers=0
        )
        heads = train_heads(fm, config, out_dir=frozen_run.root / "by-hand", val_fn=val_fn)
        emb = encode_features(fm, "test")
        plain = evaluate_embeddings(model, emb, keep_sim=True, **ranking)
        rev = evaluate_embeddings(model, encode_features(fm, "test", reverse=True), keep_sim=False, **ranking)
        parts = similarity_part_matrices(model, emb)
    finally:
        torch.set_num_threads(threads)
    assert heads.trained
    assert rec.metrics == plain.metrics
    np.testing.assert_array_equal(rec.load_sim(), plain.sim.float().numpy())
    np.testing.assert_array_equal(rec.ranks_t2v, plain.ranks.t2v)
    stored = rec.load_sim_parts()
    for name in ("global", "aligned"):
        np.testing.assert_array_equal(stored[name], parts[name].numpy())
    assert without_wall_clock(rec.extra["history"]) == without_wall_clock(
        [{k: v for k, v in h.items() if k != "step_losses"} for h in heads.result.history]
    )
    assert rec.extra["time_reversal"]["rev_t2v_R1"] == rev.metrics["t2v_R1"]
    order = extra_metrics(plain.sim.float().numpy(), emb.caption_video, data / "annotations", splits["test"])
    assert rec.extra["order_acc"] == order["order_acc"]


@pytest.mark.slow
def test_the_weights_table_of_a_frozen_clip2video_row_is_that_row_at_w_one_half(frozen_run):
    rec = frozen_run.record("clip2video")
    parts = rec.load_sim_parts()
    assert np.array_equal(combine_parts(parts["global"], parts["aligned"], 0.5).numpy(), rec.load_sim())
    values = pd.read_csv(frozen_run.root / "results" / "frozen" / "weights.csv")
    mean = values[values.line == "mean"].set_index(["row", "metric"])["value"]
    assert mean["w=0.5", "t2v_R1"] == rec.metrics["t2v_R1"]
    assert mean["w=0.5", "order_acc"] == rec.extra["order_acc"]
    assert mean["w=0", "t2v_R1"] != mean["w=1", "t2v_R1"] or mean["w=0", "v2t_R1"] != mean["w=1", "v2t_R1"]


@pytest.mark.slow
def test_resume_keeps_the_frozen_rows_and_computes_nothing(frozen_run, capsys):
    folder = frozen_run.root / "runs" / "frozen"
    before = {row: (folder / row / "metrics.json").read_bytes() for row in ROWS}
    assert frozen_run.run("--resume") == 0
    assert frozen_run.computed == {}  # every row kept: no features needed
    out = capsys.readouterr().out
    assert "0 row(s) to run, 3 kept (--resume)" in out
    assert {row: (folder / row / "metrics.json").read_bytes() for row in ROWS} == before
    # a changed head setting reruns the rows from the cached features (the backbone did not change)
    assert frozen_run.run("--resume", "--set", "train.lr=0.002", "--models", "clip2video") == 0
    assert frozen_run.computed == {}
    out = capsys.readouterr().out
    assert "--resume: recomputing clip2video (settings.train.lr" in out
    assert "features of train, val, test read from the cache" in out and "1 row(s) to run" in out
    assert frozen_run.record("clip2video").config["train"]["lr"] == 0.002


# ----------------------------------------------------------------------------- checks before work


def options(root: Path, suite, **overrides) -> RunOptions:
    return RunOptions(
        suite=suite,
        overrides=overrides,
        data_root=root / "data",
        runs_dir=root / "runs",
        results_dir=None,
        tracking=False,
        progress=False,
    )


def test_a_frozen_backbone_without_pretrained_weights_is_refused_before_work(tmp_path):
    with pytest.raises(CheckFailed) as info:
        check(options(tmp_path, "smoke", train={"backbone": "frozen"}))
    message = str(info.value)
    assert "\n" not in message and "train.backbone = 'frozen'" in message
    assert "a random frozen backbone learns nothing" in message and "train.backbone = 'finetune'" in message
    assert not (tmp_path / "runs").exists()


def test_a_frozen_row_from_a_checkpoint_is_refused_before_work(tmp_path):
    weights = pretrained_npz(tmp_path / "tiny.npz")
    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"")
    opts = options(tmp_path, "smoke", train={"backbone": "frozen"}, backbone={"clip_weights": str(weights)})
    with pytest.raises(CheckFailed) as info:
        check(dataclasses.replace(opts, checkpoints={"*": checkpoint}))
    assert any(
        "train.backbone = 'frozen' does not train from a --checkpoint" in p for p in info.value.problems
    )


def test_shipped_weights_pass_the_check_before_work(tmp_path):
    """``clip_weights = "shipped"`` (the ablation suite's) and ``"shipped:<name>"`` with the tiny
    config are checked as shipped files (present, checksum), not as open_clip tags or paths."""
    checked = check(options(tmp_path, "ablation"))
    assert len(checked.plan) == 30 and {p.settings.train.backbone for p in checked.plan} == {"frozen"}
    small = {"backbone": {"clip_weights": "shipped:tiny-synthetic"}, "train": {"backbone": "frozen"}}
    smoke = check(options(tmp_path, "smoke", **small, models=["meanp"]))
    assert [p.name for p in smoke.plan] == ["meanp"]
    with pytest.raises(CheckFailed, match=r"no shipped backbone 'nope'"):
        check(options(tmp_path, "smoke", backbone={"clip_weights": "shipped:nope"}, models=["meanp"]))
    assert not (tmp_path / "runs").exists()


def test_a_model_without_the_clip_backbone_is_refused_frozen_and_runs_fine_tuned(tmp_path):
    """A plugin model has no ``clip`` module to compute frozen features from: the check names the
    row and the fix before work; the same model as a fine-tuned variant row passes the check."""
    import tests.support.toys.toy_model  # noqa: F401  (registers toy_mean_colour, as --import would)

    with pytest.raises(CheckFailed) as info:
        check(options(tmp_path, "ablation", models=["meanp", "toy_mean_colour"]))
    (problem,) = [p for p in info.value.problems if "toy_mean_colour" in p]
    assert "row 'toy_mean_colour': train.backbone = 'frozen'" in problem
    assert "no `clip` module" in problem and '"train.backbone" = "finetune"' in problem
    suite = tmp_path / "mine.toml"
    suite.write_text(
        'base = "ablation"\n[[rows]]\nname = "mine"\nmodel = "toy_mean_colour"\n'
        'set = { "train.backbone" = "finetune" }\n'
    )
    checked = check(options(tmp_path, str(suite)))
    mine = [p for p in checked.plan if p.name.startswith("mine-")]
    assert [p.name for p in mine] == ["mine-s0", "mine-s1", "mine-s2"]
    assert {p.settings.train.backbone for p in mine} == {"finetune"}
    assert not (tmp_path / "runs").exists()

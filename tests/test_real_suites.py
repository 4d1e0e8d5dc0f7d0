"""The real suites (msrvtt-1k-a, msvd, vatex-1k5, vatex-hgr) end to end on tiny data in each
protocol's public file layout (tests/support/protocol_fixtures.py): the shipped suite files with only
the backbone, frame size and epochs shrunk. MSVD runs by default; the others are slow-marked.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clip2video.data.protocols import get_protocol
from clip2video.data.verify import verify
from clip2video.engine.records import read_run_record, read_suite_info
from clip2video.experiments.preflight import CheckFailed
from clip2video.experiments.runner import ZERO_SHOT_ROW, SuiteResult
from clip2video.experiments.suite import load_suite
from clip2video.metrics import retrieval_metrics
from tests.support.protocol_fixtures import (
    COMMA_SUFFIX,
    REAL_SUITES,
    TINY_BACKBONE,
    ProtocolData,
    brute_force_metrics,
    build_protocol_data,
    run_suite_with_tables,
    tiny_overrides,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_CSV = PROJECT_ROOT / "clip2video" / "paper" / "clip2video.csv"  # package data
MODELS = ["meanp", "clip2video"]
ROWS = [ZERO_SHOT_ROW, *MODELS]
METRIC_KEYS = [f"{d}_{m}" for d in ("t2v", "v2t") for m in ("R1", "R5", "R10", "MdR", "MnR")]
# From the spec's protocol table (protocols.md), not from the protocol registry under test.
SPEC_STRIDE = {"msrvtt-1k-a": 2, "msrvtt-full": 2, "msvd": 1, "vatex-1k5": 1, "vatex-hgr": 1}
SPEC_CENTERS = {"msrvtt-1k-a": 5, "msrvtt-full": 5, "msvd": 5, "vatex-1k5": 7, "vatex-hgr": 7}
SELECTS_ON_VAL = {"msvd", "vatex-hgr"}  # the protocols with a validation split


@dataclass
class SuiteRun:
    """A finished tiny run of a real suite and the dataset it ran on."""

    name: str
    data: ProtocolData
    result: SuiteResult
    runs: Path
    results: Path
    caught: list[warnings.WarningMessage]

    def record(self, row: str):
        return read_run_record(self.runs / self.name / row)


def run_real_suite(name: str, root: Path, source: Path, models: list[str] = MODELS) -> SuiteRun:
    """Build ``name``'s tiny dataset under ``root`` and run the shipped suite on it."""
    data = build_protocol_data(get_protocol(load_suite(name).protocol).name, root / "data", source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_suite_with_tables(
            name,
            data_root=data.data_root,
            runs_dir=root / "runs",
            results_dir=root / "results",
            tracking=False,
            overrides=tiny_overrides(models),
            progress=False,
        )
    return SuiteRun(name, data, result, root / "runs", root / "results", list(caught))


@pytest.fixture(
    scope="module",
    params=[pytest.param(s, marks=[] if s == "msvd" else [pytest.mark.slow]) for s in REAL_SUITES],
)
def suite_run(request, tmp_path_factory, synthetic_source) -> SuiteRun:
    return run_real_suite(request.param, tmp_path_factory.mktemp(request.param), synthetic_source)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("name", REAL_SUITES)
def test_shipped_real_suites_reproduce_the_paper_settings(name):
    suite = load_suite(name)
    assert suite.protocol == name
    assert suite["backbone"] == {"clip": "ViT-B-32-quickgelu", "clip_weights": "openai", "config": {}}
    assert suite["zero_shot"] is True and suite["eval"]["legacy"] is True
    assert suite["model"]["center_k"] == SPEC_CENTERS[name]
    assert suite["train"]["select_on"] == ("val" if name in SELECTS_ON_VAL else "final")
    assert suite["frames"]["max_frames"] == 12 and suite["text"]["max_words"] == 32


# ----------------------------------------------------------------------------- rows and counts


def test_rows_records_and_counts(suite_run):
    data, runs = suite_run.data, suite_run.runs
    info = read_suite_info(runs, suite_run.name)
    assert info.rows == ROWS and info.protocol == suite_run.name
    assert list(suite_run.result.rows) == ROWS
    n_captions, n_videos = len(data.test_captions), len(data.test_ids)
    assert any(f"{n_videos} videos, {n_captions} captions" in note for note in info.notes)
    assert data.multi_caption == (suite_run.name != "msrvtt-1k-a")
    for row in ROWS:
        rec = suite_run.record(row)
        assert rec.protocol == suite_run.name
        assert rec.load_sim().shape == (n_captions, n_videos)
        assert rec.ranks_t2v.shape == (n_captions,)
        assert rec.ranks_v2t.shape == (n_videos,)  # one v2t query per video, multi-caption or not
        assert rec.extra["dropped"] == {}
        assert rec.config["backbone"]["config"] == TINY_BACKBONE
    zero = suite_run.record(ZERO_SHOT_ROW)
    assert zero.extra["trained"] is False and zero.extra["model"] == "meanp"
    assert "history" not in zero.extra and "train" not in zero.config
    assert not (runs / suite_run.name / ZERO_SHOT_ROW / "checkpoints").exists()
    want_select = "val" if suite_run.name in SELECTS_ON_VAL else "final"
    for row in MODELS:
        rec = suite_run.record(row)
        assert rec.extra["trained"] is True and rec.extra["selected_on"] == want_select
        assert rec.extra["selected_on_test"] is False
        assert (runs / suite_run.name / row / "checkpoints" / "last.pt").is_file()
        (epoch,) = rec.extra["history"]  # one epoch
        assert ("val" in epoch) == (want_select == "val")
        # every caption of every training video is one pair: steps = pairs // batch
        assert epoch["step"] == suite_run.data.num_train_pairs // 8


def test_jsfusion_sentence_with_a_comma_is_read_whole(suite_run):
    if suite_run.name != "msrvtt-1k-a":
        pytest.skip("only MSR-VTT 1k-A reads the JSFusion csv")
    assert suite_run.data.test_captions[0].endswith(COMMA_SUFFIX)
    # the run used exactly one caption per test video, the csv's (not MSRVTT_data.json's three)
    assert suite_run.record("meanp").load_sim().shape == (8, 8)


# ----------------------------------------------------------------------------- metrics


def test_metrics_equal_brute_force_ranking_of_the_saved_similarities(suite_run):
    """t2v and the group v2t (best caption of each video's group) by hand; legacy beside them."""
    cv = suite_run.data.test_caption_video
    for row in ROWS:
        rec = suite_run.record(row)
        sim = rec.load_sim()
        expected = brute_force_metrics(sim, cv)
        for key in METRIC_KEYS:
            assert rec.metrics[key] == pytest.approx(expected[key]), (row, key)
        assert rec.metrics == pytest.approx(retrieval_metrics(sim, cv))
        legacy = rec.legacy
        assert legacy is not None and set(METRIC_KEYS) <= set(legacy)
        assert legacy == pytest.approx(retrieval_metrics(sim, cv, tie_policy="legacy"))
        if rec.metrics["t2v_ties"] == 0 and rec.metrics["v2t_ties"] == 0:
            for key in METRIC_KEYS:  # on tie-free matrices every policy gives the official numbers
                assert legacy[key] == pytest.approx(rec.metrics[key]), (row, key)


def test_multi_caption_v2t_is_the_group_convention_not_first_hit(suite_run):
    if not suite_run.data.multi_caption:
        pytest.skip("single caption per test video")
    cv = suite_run.data.test_caption_video
    rec = suite_run.record(ZERO_SHOT_ROW)
    sim = rec.load_sim()
    group = np.stack([sim[cv == u].max(axis=0) for u in range(sim.shape[1])])  # [u, v]
    for v in range(sim.shape[1]):
        others = np.delete(group[:, v], v)
        assert rec.ranks_v2t[v] == 1 + (others >= group[v, v]).sum()


def _fresh_zero_shot_model(name: str):
    from clip2video.models import create_model

    suite = load_suite(name, tiny_overrides(MODELS))
    torch.manual_seed(suite["seeds"][0])
    return create_model("meanp", clip=TINY_BACKBONE, clip_weights=None, **suite["model"]).eval()


def test_zero_shot_row_is_the_untrained_model(suite_run):
    """Its numbers are those of a fresh meanp (same seed) evaluated by hand, and by the engine."""
    from clip2video.data.frames import FrameSampler
    from clip2video.data.text import CaptionTokenizer
    from clip2video.data.videos import find_video
    from clip2video.engine.evaluate import evaluate

    data = suite_run.data
    rec = suite_run.record(ZERO_SHOT_ROW)
    model = _fresh_zero_shot_model(suite_run.name)
    sampler = FrameSampler(extraction_fps=5, stride=SPEC_STRIDE[suite_run.name], max_frames=12, image_size=32)
    tokenizer = CaptionTokenizer(max_words=32)
    with torch.no_grad():
        loaded = [sampler.load(find_video(data.videos, vid)) for vid in data.test_ids]
        video = model.encode_video(torch.stack([f for f, _ in loaded]), torch.stack([m for _, m in loaded]))
        text = model.encode_text(*tokenizer(data.test_captions))
        by_hand = model.similarity(text, video).numpy()
    np.testing.assert_allclose(rec.load_sim(), by_hand, rtol=1e-5, atol=1e-4)

    split = type("Split", (), {})()
    split.video_ids, split.captions = data.test_ids, data.test_captions
    split.caption_video, split.dropped = data.test_caption_video, {}
    engine = evaluate(
        _fresh_zero_shot_model(suite_run.name),
        split,
        data.videos,
        sampler,
        tokenizer,
        protocol=suite_run.name,
        batch_size=64,
        progress=False,
    )
    assert rec.metrics == engine.metrics


# ----------------------------------------------------------------------------- tables


def _published(protocol: str) -> dict[str, float]:
    with open(PUBLISHED_CSV, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["protocol"] == protocol and r["model"] == "clip2video"]
    assert len(rows) == 1, f"{PUBLISHED_CSV} should hold one clip2video row for {protocol}"
    return {k: float(rows[0][k]) for k in METRIC_KEYS}


def _number(cell: str) -> float:
    return float(str(cell).split(" [")[0].rstrip("*"))


def test_tables_print_the_published_row_and_the_legacy_difference(suite_run):
    folder = suite_run.results / suite_run.name
    for name in ("table.md", "table.tex", "table.csv"):
        assert (folder / name).stat().st_size > 0, name
    table = pd.read_csv(folder / "table.csv", dtype=str).set_index("row")
    published = _published(suite_run.name)
    legacy = suite_run.record("clip2video").legacy
    labels = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MdR": "MdR", "MnR": "MnR"}
    for key in METRIC_KEYS:
        direction, metric = key.split("_")
        column = f"{direction} {labels[metric]}"
        assert _number(table.loc["clip2video (published)", column]) == pytest.approx(published[key])
        diff = _number(table.loc["clip2video (legacy - published)", column])
        assert diff == pytest.approx(legacy[key] - published[key], abs=0.051), key
        assert _number(table.loc["clip2video (legacy ties)", column]) == pytest.approx(legacy[key], abs=0.051)
    # the zero-shot and meanp rows have no published counterpart
    assert "meanp-zeroshot (published)" not in table.index
    assert "CLIP2Video" in (folder / "table.md").read_text()


# ----------------------------------------------------------------------------- split files


def test_tiny_split_lists_fail_verify_but_the_suite_runs_and_says_so(suite_run):
    """The tiny lists differ from the public files: verify reports it; the runner warns, notes it
    in the tables, and runs (research on edited splits is legitimate, silent comparison is not)."""
    data = suite_run.data
    report = verify(suite_run.name, data.annotations, data.videos, progress=False)
    assert not report.ok
    assert {c.status for c in report.split_checks} == {"mismatch"}
    assert {Path(c.path) for c in report.split_checks} == set(data.split_files)
    assert any("test" in p and "expects" in p for p in report.count_problems)
    assert not report.missing and not report.unreadable
    messages = [str(w.message) for w in suite_run.caught]
    for path in data.split_files:
        assert any(path.name in m and "public" in m for m in messages), path.name
    notes = read_suite_info(suite_run.runs, suite_run.name).notes
    assert any("public" in n and data.split_files[0].name in n for n in notes)
    assert any("public" in line for line in (suite_run.results / suite_run.name / "table.md").open())


# ----------------------------------------------------------------------------- fast failure paths


def test_eval_only_without_checkpoints_runs_only_the_zero_shot_row(tmp_path, synthetic_source):
    data = build_protocol_data("msvd", tmp_path / "data", synthetic_source)
    with pytest.warns(UserWarning, match="no checkpoint for 'clip2video'"):
        result = run_suite_with_tables(
            "msvd",
            data_root=data.data_root,
            eval_only=True,
            runs_dir=tmp_path / "runs",
            results_dir=None,
            tracking=False,
            overrides=tiny_overrides(MODELS),
            progress=False,
        )
    assert list(result.rows) == [ZERO_SHOT_ROW]
    assert read_suite_info(tmp_path / "runs", "msvd").rows == [ZERO_SHOT_ROW]
    folder = tmp_path / "runs" / "msvd"  # (its hidden .lock file aside)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        ZERO_SHOT_ROW,
        "suite.json",
    ]


def test_missing_test_videos_are_named_before_any_training(tmp_path, synthetic_source):
    data = build_protocol_data("vatex-hgr", tmp_path / "data", synthetic_source)
    gone = [data.test_ids[1], data.test_ids[5]]
    for vid in gone:
        (data.videos / f"{vid}.mp4").unlink()
    with pytest.raises(CheckFailed) as info:  # the check before work, one problem
        run_suite_with_tables(
            "vatex-hgr",
            data_root=data.data_root,
            runs_dir=tmp_path / "runs",
            results_dir=None,
            tracking=False,
            overrides=tiny_overrides(MODELS),
            progress=False,
        )
    assert all(vid in str(info.value) for vid in gone) and "allow" in str(info.value)
    assert not (tmp_path / "runs" / "vatex-hgr").exists()


@pytest.mark.slow
def test_allow_missing_drops_and_records_the_videos(tmp_path, synthetic_source):
    data = build_protocol_data("vatex-hgr", tmp_path / "data", synthetic_source)
    gone = data.test_ids[2]
    (data.videos / f"{gone}.mp4").unlink()
    result = run_suite_with_tables(
        "vatex-hgr",
        data_root=data.data_root,
        runs_dir=tmp_path / "runs",
        results_dir=tmp_path / "results",
        tracking=False,
        overrides={**tiny_overrides(["meanp"]), "data": {"allow_missing": True}},
        progress=False,
    )
    assert list(result.rows) == [ZERO_SHOT_ROW, "meanp"]
    rec = read_run_record(tmp_path / "runs" / "vatex-hgr" / ZERO_SHOT_ROW)
    n_gone = int((data.test_caption_video == 2).sum())
    assert rec.extra["dropped"] == {"video_ids": [gone], "num_videos": 1, "num_captions": n_gone}
    assert rec.load_sim().shape == (len(data.test_captions) - n_gone, len(data.test_ids) - 1)


@pytest.mark.slow
def test_msrvtt_full_from_frame_folders_via_a_suite_file(tmp_path, synthetic_source):
    """No suite ships for MSR-VTT full; a user's suite file runs it, here on frame folders."""
    data = build_protocol_data("msrvtt-full", tmp_path / "data", synthetic_source, frame_folders=True)
    assert all((data.videos / vid).is_dir() for vid in data.test_ids)
    suite_file = tmp_path / "full.toml"
    suite_file.write_text(
        'name = "full-tiny"\nprotocol = "msrvtt-full"\nmodels = ["clip2video"]\nzero_shot = true\n'
        "[eval]\nlegacy = true\n"
    )
    result = run_suite_with_tables(
        suite_file,
        data_root=data.data_root,
        runs_dir=tmp_path / "runs",
        results_dir=tmp_path / "results",
        tracking=False,
        overrides=tiny_overrides(["clip2video"], data={"annotations": "msrvtt-full/annotations"}),
        progress=False,
    )
    assert list(result.rows) == [ZERO_SHOT_ROW, "clip2video"]
    rec = read_run_record(tmp_path / "runs" / "full-tiny" / "clip2video")
    sim = rec.load_sim()
    assert sim.shape == (len(data.test_captions), len(data.test_ids)) == (24, 8)
    expected = brute_force_metrics(sim, data.test_caption_video)
    assert {k: rec.metrics[k] for k in METRIC_KEYS} == pytest.approx({k: expected[k] for k in METRIC_KEYS})
    table = pd.read_csv(tmp_path / "results" / "full-tiny" / "table.csv", dtype=str).set_index("row")
    assert _number(table.loc["clip2video (published)", "t2v R@1"]) == _published("msrvtt-full")["t2v_R1"]
    assert (
        json.loads((tmp_path / "runs" / "full-tiny" / "suite.json").read_text())["protocol"] == "msrvtt-full"
    )


def test_resume_keeps_the_zero_shot_rows_post_processed_rows(tmp_path, synthetic_source):
    """A finished row's marked rows (here DSL) stay listed after --resume, whatever its name holds."""
    data = build_protocol_data("msvd", tmp_path / "data", synthetic_source)
    settings = dict(
        data_root=data.data_root,
        eval_only=True,
        runs_dir=tmp_path / "runs",
        results_dir=tmp_path / "results",
        tracking=False,
        overrides=tiny_overrides(MODELS, eval={"postprocess": ["dsl"]}),
        progress=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = run_suite_with_tables("msvd", **settings)
        rows = read_suite_info(tmp_path / "runs", "msvd").rows
        again = run_suite_with_tables("msvd", resume=True, **settings)
    assert rows[0] == ZERO_SHOT_ROW and rows[1].startswith(f"{ZERO_SHOT_ROW}+") and len(rows) == 2
    assert read_run_record(tmp_path / "runs" / "msvd" / rows[1]).postprocess is not None
    assert read_suite_info(tmp_path / "runs", "msvd").rows == rows
    assert again.rows == first.rows
    table = pd.read_csv(tmp_path / "results" / "msvd" / "table.csv", dtype=str)
    assert any(label.startswith(f"{rows[1]} ") for label in table["row"])  # with its marker

"""The pipeline (issue 17 §1): one options object, a check before work that writes nothing and reports
every problem at once (issue 19 §2), the runner using what the check resolved (each file read once),
tables from every caller; variant rows equal to ``--set`` (issue 16 §2); an evaluation that reads
only its test split (issue 19 §1)."""

from __future__ import annotations

import argparse
import collections
import copy
import csv
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import clip2video.experiments.runner as runner
from clip2video.cli import build_parser, main
from clip2video.engine.records import read_run_record, read_suite_info
from clip2video.engine.train import without_wall_clock
from clip2video.pipeline import CheckFailed, RunOptions, check, run_suite
from tests.support.protocol_fixtures import (
    SMOKE_SETTINGS,
    TINY_BACKBONE,
    smoke_overrides,
    source_clips,
)
from tests.support.tiny_clip import tiny_official_checkpoint


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


def smoke_options(root: Path, **kwargs) -> RunOptions:
    kwargs.setdefault("overrides", smoke_overrides(["meanp"]))
    return RunOptions(
        suite="smoke",
        data_root=root / "data",
        runs_dir=root / "runs",
        results_dir=root / "results",
        tracking=False,
        progress=False,
        **kwargs,
    )


# ----------------------------------------------------------------------------- the check writes nothing


def test_the_check_writes_nothing_and_returns_what_it_resolved(tmp_path):
    checked = check(smoke_options(tmp_path))
    assert files_under(tmp_path) == []  # no generated data, no runs folder, no results
    assert checked.data.pending and checked.data.splits == {}
    assert [p.name for p in checked.plan] == ["meanp"] and checked.threads == 1
    assert checked.suite.settings.train.epochs == SMOKE_SETTINGS["train"]["epochs"]


def test_run_suite_from_python_checks_runs_and_writes_tables(tmp_path):
    result = run_suite(
        "smoke",
        data_root=tmp_path / "data",
        runs_dir=tmp_path / "runs",
        results_dir=tmp_path / "results",
        overrides=smoke_overrides(["meanp"]),
        tracking=False,
        progress=False,
    )
    assert list(result.rows) == ["meanp"]
    assert (tmp_path / "results" / "smoke" / "table.md").is_file()
    assert result.results_files and all(p.is_file() for p in result.results_files)
    # data that is there now: the check loads the splits itself, still writing nothing
    before = files_under(tmp_path)
    checked = check(smoke_options(tmp_path))
    assert files_under(tmp_path) == before
    assert not checked.data.pending and set(checked.data.splits) == {"train", "val", "test"}
    assert len(checked.data.video_paths["test"]) == checked.data.splits["test"].num_videos


# ----------------------------------------------------------------------------- each file read once


class Reads:
    """Counts what ``clip2video ablation`` reads: the suite file, the data (generated), each split."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import clip2video.experiments.suite as suite_module
        from clip2video.data import protocols, synthetic

        self.counts: collections.Counter[str] = collections.Counter()
        real_read = suite_module._read_toml
        monkeypatch.setattr(suite_module, "_read_toml", self._wrap("suite file", real_read))
        real_reader = protocols.get_reader("synthetic")

        def reader(proto, annotations, split, **kwargs):
            self.counts[f"split {split}"] += 1
            return real_reader(proto, annotations, split, **kwargs)

        protocols.register_reader("synthetic", reader, overwrite=True)
        self._restore = lambda: protocols.register_reader("synthetic", real_reader, overwrite=True)
        monkeypatch.setattr(synthetic, "prepare_data", self._wrap("data written", synthetic.prepare_data))
        # rows in this process, so that their reads are counted too
        monkeypatch.setattr(
            runner, "run_rows", lambda specs, jobs, on_done: runner.run_rows_in_process(specs, on_done)
        )

    def _wrap(self, what, fn):
        def counted(*args, **kwargs):
            self.counts[what] += 1
            return fn(*args, **kwargs)

        return counted


def ablation_argv(root: Path, *extra: str) -> list[str]:
    args = ["ablation", "--suite", "smoke", "--models", "meanp", "tdb", "--no-tracking", "--no-progress"]
    for section, values in SMOKE_SETTINGS.items():
        for key, value in values.items():
            args += ["--set", f"{section}.{key}={json.dumps(value)}"]
    args += [
        "--data-root",
        str(root / "data"),
        "--runs-dir",
        str(root / "runs"),
        "--results-dir",
        str(root / "results"),
    ]
    return [*args, *extra]


@pytest.mark.slow
def test_the_suite_the_data_and_each_split_are_read_once(tmp_path, monkeypatch):
    """Before the pipeline: the suite file twice, the data resolved twice, each split 2 + rows times."""
    reads = Reads(monkeypatch)
    try:
        check_reads(reads, tmp_path)
    finally:
        reads._restore()


def check_reads(reads: Reads, tmp_path: Path) -> None:
    assert main(ablation_argv(tmp_path)) == 0
    assert reads.counts == {
        "suite file": 1,
        "data written": 1,
        "split train": 1,
        "split val": 1,
        "split test": 1,
    }
    assert (tmp_path / "results" / "smoke" / "table.md").is_file()
    reads.counts.clear()
    assert main(ablation_argv(tmp_path, "--resume")) == 0  # data there: nothing written, read once
    assert reads.counts == {"suite file": 1, "split train": 1, "split val": 1, "split test": 1}


# ----------------------------------------------------------------------------- variant rows = --set


VARIANT = """
base = "smoke"
models = []

[[rows]]
name = "tdb-mlp"
model = "tdb"
set = { "model.tdb_proj" = "mlp" }
"""


def records_equal_but_the_row_name(a: Path, b: Path) -> None:
    x, y = read_run_record(a), read_run_record(b)
    assert x.metrics == y.metrics
    for name in ("ranks.npz", "sim.npz"):
        with np.load(a / name) as p, np.load(b / name) as q:
            assert sorted(p.files) == sorted(q.files)
            for key in p.files:
                np.testing.assert_array_equal(p[key], q[key], err_msg=f"{name} {key}")
    cx, cy = json.loads((a / "config.json").read_text()), json.loads((b / "config.json").read_text())
    assert cx["row"].pop("name") == a.name and "name" not in cy["row"]
    assert cx == cy
    assert without_wall_clock(x.extra["history"]) == without_wall_clock(y.extra["history"])
    for key in ("order_acc", "best_epoch", "seed", "model", "trained"):
        assert x.extra.get(key) == y.extra.get(key), key
    assert (x.extra["row"], y.extra["row"]) == (a.name, b.name)
    fx, fy = runner.record_fingerprint(x), runner.record_fingerprint(y)
    assert fx["data"] == fy["data"] and fx["code"] == fy["code"] and fx["platform"] == fy["platform"]
    assert fx["settings"] != fy["settings"]  # the variant's name is part of its settings


@pytest.mark.slow
def test_a_variant_rows_record_equals_the_same_model_run_with_set(tmp_path):
    suite = tmp_path / "variant.toml"
    suite.write_text(VARIANT)
    common = ["--no-tracking", "--no-progress", "--data-root", str(tmp_path / "data")]
    for section, values in SMOKE_SETTINGS.items():
        for key, value in values.items():
            common += ["--set", f"{section}.{key}={json.dumps(value)}"]
    out = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    assert main(["ablation", "--suite", str(suite), *common, *out]) == 0
    assert (
        main(
            ["ablation", "--suite", "smoke", "--models", "tdb", "--set", "model.tdb_proj=mlp", *common, *out]
        )
        == 0
    )
    records_equal_but_the_row_name(
        tmp_path / "runs" / "variant" / "tdb-mlp", tmp_path / "runs" / "smoke" / "tdb"
    )
    assert read_suite_info(tmp_path / "runs", "variant").rows == ["tdb-mlp"]
    table = (tmp_path / "results" / "variant" / "table.md").read_text()
    assert "tdb-mlp" in table  # tables group by the row name


SIMS_READ_BY_A_WEIGHTS_TABLE = """
base = "smoke"
models = ["meanp", "clip2video"]

[eval]
save_sim = false

[[tables]]
name = "weights"
kind = "weights"
row = "clip2video"
weights = [0.0, 0.5, 1.0]
reference = 0.5
"""


@pytest.mark.slow
def test_without_save_sim_only_the_row_a_weights_table_reads_keeps_its_similarities(tmp_path):
    suite = tmp_path / "lean.toml"
    suite.write_text(SIMS_READ_BY_A_WEIGHTS_TABLE)
    argv = [
        "ablation",
        "--suite",
        str(suite),
        "--no-tracking",
        "--no-progress",
        "--data-root",
        str(tmp_path / "data"),
    ]
    for section, values in SMOKE_SETTINGS.items():
        for key, value in values.items():
            argv += ["--set", f"{section}.{key}={json.dumps(value)}"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    assert main(argv) == 0
    runs = tmp_path / "runs" / "lean"
    assert not (runs / "meanp" / "sim.npz").exists()
    with np.load(runs / "clip2video" / "sim.npz") as kept:
        assert {"sim", "sim_global", "sim_aligned"} <= set(kept.files)
    assert "w = 0.5" in (tmp_path / "results" / "lean" / "weights.md").read_text()
    # save_sim changes no number: it is not part of a row's settings (nor of its fingerprint)
    assert "save_sim" not in json.loads((runs / "meanp" / "config.json").read_text())["eval"]


# ----------------------------------------------------------------------------- one report before work


def verb_flags(verb: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {flag for action in sub.choices[verb]._actions for flag in action.option_strings}


def advised_flags(text: str) -> set[str]:
    """Flags a message advises (commands quoted in backticks are whole commands of other verbs)."""
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", re.sub(r"`[^`]*`", "", text)))


def test_every_problem_is_reported_at_once_before_any_work(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [
        "eval",
        "--protocol",
        "msrvtt-1k-a",
        "--model",
        "clip2video",
        "--checkpoint",
        str(tmp_path / "missing.bin"),
        "--device",
        "cuda",
        "--data-root",
        str(tmp_path / "datasets"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
        "--no-tracking",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1] == "clip2video: error: 4 problems found before any work (listed above); nothing was run"
    report = "\n".join(lines[:-1])
    assert "sees no CUDA device" in report and "--device cpu" in report
    assert f"--checkpoint {tmp_path / 'missing.bin'} (for model 'clip2video'): file does not exist" in report
    for what in ("annotations", "videos"):
        assert f"the {what} folder {tmp_path / 'datasets' / 'msrvtt-1k-a' / what} does not exist" in report
    assert advised_flags(err) <= verb_flags("eval"), advised_flags(err) - verb_flags("eval")
    assert files_under(tmp_path) == []


def test_openai_weights_offline_fail_before_work_naming_the_flag(tmp_path, capsys, monkeypatch):
    from clip2video.models.backbone import _cached_pretrained

    if _cached_pretrained("ViT-B-32-quickgelu", "openai"):
        pytest.skip("OpenAI's ViT-B-32 weights are in this machine's cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(
        [
            "ablation",
            "--suite",
            "smoke",
            "--set",
            "backbone.clip=ViT-B-32-quickgelu",
            "--clip-weights",
            "openai",
            "--data-root",
            str(tmp_path / "data"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-tracking",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot download CLIP weights ViT-B-32-quickgelu/openai (HF_HUB_OFFLINE is set)" in err
    assert "--clip-weights FILE" in err and advised_flags(err) <= verb_flags("ablation")
    assert files_under(tmp_path) == []


def write_vatex(root: Path, test_ids: list[str], captions: int = 2) -> Path:
    """A VATEX-layout annotations folder (vatex-1k5) with the given test ids and an empty videos folder."""
    ann = root / "vatex" / "annotations"
    ann.mkdir(parents=True)
    train = [f"Tr{i:03d}-aa_000001_000011" for i in range(3)]
    (ann / "train_list.txt").write_text("\n".join(train) + "\n")
    (ann / "test1k5_sec_list.txt").write_text("\n".join(test_ids) + "\n")
    data = {vid: {"enCap": [f"a clip number {n}" for n in range(captions)]} for vid in train + test_ids}
    (ann / "vatex_data.json").write_text(json.dumps(data))
    (root / "vatex" / "videos").mkdir()
    return root


def test_missing_test_videos_show_ten_ids_and_write_the_full_list(tmp_path, capsys):
    ids = [f"Vx{i:03d}-ab_000010_000020" for i in range(25)]
    write_vatex(tmp_path / "data", ids)
    runs = tmp_path / "runs"
    code = main(
        [
            "eval",
            "--protocol",
            "vatex-1k5",
            "--model",
            "meanp",
            "--zero-shot",
            "--clip-weights",
            "none",
            "--data-root",
            str(tmp_path / "data"),
            "--runs-dir",
            str(runs),
            "--no-tracking",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    listing = runs / "eval-vatex-1k5-meanp" / "missing-test-videos.txt"
    line = err.strip().splitlines()[-1]
    assert line.startswith("clip2video: error: 25 of 25 vatex-1k5 test video(s) are missing in ")
    assert ", ".join(ids[:10]) + " and 15 more" in line and f"(full list: {listing})" in line
    assert ids[10] not in line
    assert listing.read_text().split() == ids
    assert advised_flags(err) <= verb_flags("eval")
    assert len(err) < 2000


# ----------------------------------------------------------------------------- eval reads only its test split


def msrvtt_test_only(root: Path, splits_dir: Path, source: Path) -> Path:
    """``root/msrvtt``: only MSRVTT_JSFUSION_test.csv and its 1,000 test videos (tiny generated stand-ins)."""
    ann, videos = root / "msrvtt" / "annotations", root / "msrvtt" / "videos"
    ann.mkdir(parents=True)
    videos.mkdir()
    shutil.copy(splits_dir / "MSRVTT_JSFUSION_test.csv", ann / "MSRVTT_JSFUSION_test.csv")
    with open(ann / "MSRVTT_JSFUSION_test.csv", newline="") as handle:
        ids = [row["video_id"] for row in csv.DictReader(handle)]
    clips = [clip for clip, _ in source_clips(source)]
    for n, vid in enumerate(ids):
        os.link(clips[n % len(clips)], videos / f"{vid}.mp4")  # a hard link: no link out of the folder
    return root


@pytest.mark.slow
def test_eval_of_msrvtt_1k_a_needs_only_the_test_csv_and_the_test_videos(
    tmp_path,
    splits_dir,
    synthetic_source,
):
    data = msrvtt_test_only(tmp_path / "data", splits_dir, synthetic_source)
    ckpt = tiny_official_checkpoint(
        "clip2video", tmp_path / "pytorch_model.bin.2", seed=1, clip=TINY_BACKBONE, temporal_layers=1
    )
    argv = [
        "eval",
        "--protocol",
        "msrvtt-1k-a",
        "--model",
        "clip2video",
        "--checkpoint",
        str(ckpt),
        "--data-root",
        str(data),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
        "--set",
        "frames.image_size=32",
        "--no-tracking",
        "--no-progress",
    ]
    args = build_parser().parse_args(argv)
    before = copy.deepcopy(vars(args))
    assert args.func(args) == 0
    assert vars(args) == before  # eval does not rewrite its arguments
    record = read_run_record(tmp_path / "runs" / "eval-msrvtt-1k-a-clip2video" / "clip2video")
    assert len(record.ranks_t2v) == 1000 and record.load_sim().shape == (1000, 1000)
    data_fp = runner.record_fingerprint(record)["data"]
    assert sorted(data_fp) == ["annotations", "videos.test"]
    assert list(data_fp["annotations"]) == ["MSRVTT_JSFUSION_test.csv"]
    result = json.loads((tmp_path / "results" / "eval-msrvtt-1k-a-clip2video" / "result.json").read_text())
    (row,) = result["rows"]
    assert row["row"] == "clip2video" and row["checkpoints"][0]["path"] == str(ckpt.resolve())


# ----------------------------------------------------------------------------- warnings


def test_an_untrained_backbone_with_a_small_backbone_rate_is_warned_about(tmp_path):
    options = smoke_options(tmp_path, overrides={**smoke_overrides(["meanp"]), "train": {"coef_lr": 0.001}})
    with pytest.warns(UserWarning, match=r"row 'meanp' trains a backbone without pretrained weights"):
        check(options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(smoke_options(tmp_path))  # smoke trains its tiny backbone at coef_lr = 1: no warning


def test_a_failed_check_is_one_exception_listing_every_problem(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    options = RunOptions(
        suite="smoke",
        overrides=smoke_overrides(["meanp"]),
        data_root=tmp_path / "data",
        runs_dir=blocker / "runs",
        results_dir=blocker / "results",
        checkpoints={"nope": tmp_path / "x.pt"},
        tracking=False,
    )
    with pytest.raises(CheckFailed) as info:
        check(options)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert "'nope' is not a row of suite 'smoke'" in problems[0]
    assert "runs folder (--runs-dir)" in problems[1] and "results folder (--results-dir)" in problems[2]
    assert str(info.value).startswith("3 problems found before any work")
    assert info.value.report().count("\n") == 3


def test_a_missing_train_file_is_named_with_flags_the_verb_has(tmp_path, capsys, synthetic_source):
    """Training on 1k-A needs MSRVTT_train.9k.csv: the advice names --data-root / --set, not --annotations."""
    ann, videos = tmp_path / "data" / "msrvtt" / "annotations", tmp_path / "data" / "msrvtt" / "videos"
    ann.mkdir(parents=True)
    videos.mkdir()
    clips = [clip for clip, _ in source_clips(synthetic_source)][:3]
    with open(ann / "MSRVTT_JSFUSION_test.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for n, clip in enumerate(clips):
            writer.writerow([f"ret{n}", f"msr{7010 + n}", f"video{7010 + n}", f"a caption {n}"])
            os.link(clip, videos / f"video{7010 + n}.mp4")
    argv = ["ablation", "--suite", "msrvtt-1k-a", "--models", "meanp", "--clip-weights", "none"]
    argv += ["--data-root", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"), "--no-tracking"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "train split: protocol 'msrvtt-1k-a' needs MSRVTT_train.9k.csv" in err
    assert "--annotations" not in err and advised_flags(err) <= verb_flags("ablation")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_the_check_opens_train_and_val_videos_with_either_decoder(tmp_path, monkeypatch, decoder):
    """Train and val videos: opened, first frame decoded; a broken train video is named before work."""
    monkeypatch.setenv("CLIP2VIDEO_DECODER", decoder)
    checked = runner.prepare_data(check(smoke_options(tmp_path)))  # generates the data, then checks it
    assert set(checked.data.video_paths) == {"train", "val", "test"}
    broken = checked.data.video_paths["train"][3]
    broken.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(CheckFailed, match=rf"train video\(s\) cannot be decoded: {broken.stem} \({broken}"):
        check(smoke_options(tmp_path))

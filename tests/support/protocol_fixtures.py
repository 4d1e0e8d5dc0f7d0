"""Tiny datasets in every real protocol's on-disk layout, built from generated synthetic clips.

The real datasets cannot be downloaded here, so the real suites (``msrvtt-1k-a``, ``msvd``,
``vatex-1k5``, ``vatex-hgr``) and ``msrvtt-full`` are exercised on generated clips whose
annotation files are written in each protocol's public format, under renamed ids that look like
the real ones (``video7010``, ``-Clip03_13_18``, ``Vx003-ab_000013_000023``)::

    <data_root>/<protocol>/annotations/...   the protocol's split lists and captions file
    <data_root>/<protocol>/videos/<id>.mp4   a copy of a generated clip (MSVD: ``.avi``;
                                             ``frame_folders=True``: ``<id>/00000001.jpg ...``)

The tiny split lists cannot match the public files' counts and checksums; ``verify`` reports
that, and loading goes on (see ``tests/test_real_suites.py``).

Everything a test asserts against (ids, captions in protocol order, the caption -> video index)
is recorded in :class:`ProtocolData` by this module while it writes the files, independently of
the loaders under test. :func:`brute_force_metrics` ranks by hand with the spec's formulas.
"""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip2video.data.synthetic import generate_synthetic
from clip2video.engine.train import without_wall_clock

# The generated clips every protocol fixture draws from: no test twins (time-reversed pairs),
# so a clip appears once; 3 captions per clip (the generator's most).
SOURCE_SEED = 3
SPLIT_SIZES = {"train": 16, "val": 4, "test": 8}
SOURCE_CLIPS = sum(SPLIT_SIZES.values())
CAPTIONS_PER_CLIP = 3
REAL_SUITES = ("msrvtt-1k-a", "msvd", "vatex-1k5", "vatex-hgr")
LAYOUT_PROTOCOLS = ("msrvtt-1k-a", "msrvtt-full", "msvd", "vatex-1k5", "vatex-hgr")
# A JSFusion sentence with a comma inside quotes (the spec asks for a real CSV parser).
COMMA_SUFFIX = ", then it stays"

# The smoke suite's tiny backbone (benchmarks/suites/smoke.toml), spelled out so that a change
# there does not silently change these tests.
TINY_BACKBONE: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "layers": 1},
}


@dataclass
class ProtocolData:
    """One tiny dataset in a protocol's layout and what the tests expect from it."""

    protocol: str
    data_root: Path
    annotations: Path
    videos: Path
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    test_captions: list[str]
    test_caption_video: np.ndarray
    num_train_pairs: int
    split_files: list[Path] = field(default_factory=list)
    source_of: dict[str, Path] = field(default_factory=dict)  # id -> generated clip

    @property
    def multi_caption(self) -> bool:
        return len(self.test_captions) != len(self.test_ids)


# ----------------------------------------------------------------------------- the source clips


def make_source(root: str | Path) -> Path:
    """Generate the shared source clips (idempotent): ``root/annotations``, ``root/videos``."""
    return generate_synthetic(
        root,
        seed=SOURCE_SEED,
        num_train=SOURCE_CLIPS,
        num_val=0,
        num_test_pairs=0,
        captions_per_video=CAPTIONS_PER_CLIP,
        size=(32, 32),
    )


def source_clips(source: Path) -> list[tuple[Path, list[str]]]:
    """(video file, captions) of every source clip, in the generator's list order."""
    ids = (source / "annotations" / "train_list.txt").read_text().split()
    data = json.loads((source / "annotations" / "synthetic_data.json").read_text())
    return [(source / "videos" / f"{vid}.mp4", list(data[vid]["enCap"])) for vid in ids]


# ----------------------------------------------------------------------------- id schemes


def _ids(protocol: str) -> dict[str, list[str]]:
    """Renamed ids per split, shaped like the real datasets' ids."""
    n_train, n_val, n_test = SPLIT_SIZES["train"], SPLIT_SIZES["val"], SPLIT_SIZES["test"]
    if protocol == "msrvtt-full":  # the public full split tests on video7010 .. video9999
        return {
            "train": [f"video{i}" for i in range(n_train)],
            "val": [],
            "test": [f"video{7010 + i}" for i in range(n_test)],
        }
    if protocol.startswith("msrvtt"):
        ids = [f"video{i}" for i in range(SOURCE_CLIPS)]
        # 1k-A has no val split: the val clips join the training list
        return {"train": ids[: n_train + n_val], "val": [], "test": ids[n_train + n_val :]}
    if protocol == "msvd":
        ids = [f"-Clip{i:02d}_{10 + i}_{15 + i}" for i in range(SOURCE_CLIPS)]
    else:  # VATEX: youtube id + start and end seconds
        ids = [f"Vx{i:03d}-ab_{10 + i:06d}_{20 + i:06d}" for i in range(SOURCE_CLIPS)]
    split = {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}
    if protocol == "vatex-1k5":  # no validation split (the public val list overlaps the test list)
        split = {"train": split["train"] + split["val"], "val": [], "test": split["test"]}
    return split


# ----------------------------------------------------------------------------- writers


def _write_lines(path: Path, ids: list[str], *, final_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ids) + ("\n" if final_newline else ""))
    return path


def _write_id_csv(path: Path, ids: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id"])
        writer.writerows([vid] for vid in ids)
    return path


def _write_msrvtt_data(path: Path, captions: dict[str, list[str]]) -> Path:
    """``MSRVTT_data.json``; sentences interleaved across videos, as the public file orders them."""
    videos = [{"video_id": vid, "id": n, "category": n % 20, "split": "?"} for n, vid in enumerate(captions)]
    sentences = []
    for k in range(max(len(c) for c in captions.values())):
        for vid, caps in captions.items():
            if k < len(caps):
                sentences.append({"caption": caps[k], "video_id": vid, "sen_id": len(sentences)})
    path.write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return path


def _write_jsfusion(path: Path, pairs: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for n, (vid, sentence) in enumerate(pairs):
            writer.writerow([f"ret{n}", f"msr{vid[5:]}", vid, sentence])
    return path


def _link_video(videos: Path, vid: str, clip: Path, suffix: str, frame_folder: bool) -> None:
    videos.mkdir(parents=True, exist_ok=True)
    if not frame_folder:  # a copy: a symbolic link would leave the videos folder (refused by default)
        shutil.copyfile(clip, videos / f"{vid}{suffix}")
        return
    import decord
    from PIL import Image

    folder = videos / vid
    folder.mkdir()
    reader = decord.VideoReader(str(clip))
    for n in range(len(reader)):  # the clips are 5 fps: every frame is one the extraction keeps
        Image.fromarray(reader[n].asnumpy()).save(folder / f"{n + 1:08d}.jpg")


def build_protocol_data(
    protocol: str, data_root: str | Path, source: Path, *, frame_folders: bool = False
) -> ProtocolData:
    """Write ``<data_root>/<protocol>/{annotations,videos}`` in ``protocol``'s public layout."""
    if protocol not in LAYOUT_PROTOCOLS:
        raise ValueError(f"no fixture layout for {protocol!r}; known: {LAYOUT_PROTOCOLS}")
    root = Path(data_root) / protocol
    ann, videos = root / "annotations", root / "videos"
    ann.mkdir(parents=True)
    ids = _ids(protocol)
    order = ids["train"] + ids["val"] + ids["test"]
    clips = source_clips(source)[: len(order)]
    captions = {vid: caps for vid, (_, caps) in zip(order, clips, strict=True)}
    if protocol == "msvd":  # MSVD's caption counts vary from video to video
        captions = {vid: caps[: 1 + n % CAPTIONS_PER_CLIP] for n, (vid, caps) in enumerate(captions.items())}
    test_captions: list[str]
    files: list[Path] = []
    if protocol == "msrvtt-1k-a":
        pairs = [(vid, captions[vid][0]) for vid in ids["test"]]
        pairs[0] = (pairs[0][0], pairs[0][1] + COMMA_SUFFIX)
        files.append(_write_id_csv(ann / "MSRVTT_train.9k.csv", ids["train"]))
        files.append(_write_jsfusion(ann / "MSRVTT_JSFUSION_test.csv", pairs))
        _write_msrvtt_data(ann / "MSRVTT_data.json", captions)
        test_captions = [sentence for _, sentence in pairs]
        test_owner = list(range(len(pairs)))
    else:
        test_captions = [c for vid in ids["test"] for c in captions[vid]]
        test_owner = [i for i, vid in enumerate(ids["test"]) for _ in captions[vid]]
    if protocol == "msrvtt-full":
        files.append(_write_id_csv(ann / "MSRVTT_train.full.csv", ids["train"]))
        files.append(_write_id_csv(ann / "MSRVTT_test.full.csv", ids["test"]))
        _write_msrvtt_data(ann / "MSRVTT_data.json", captions)
    elif protocol == "msvd":
        # the public train and val lists lack their final newline
        files.append(_write_lines(ann / "train_list.txt", ids["train"], final_newline=False))
        files.append(_write_lines(ann / "val_list.txt", ids["val"], final_newline=False))
        files.append(_write_lines(ann / "test_list.txt", ids["test"]))
        pkl = ann / "raw-captions.pkl"  # the public token lists, converted the documented way
        pkl.write_bytes(pickle.dumps({vid: [c.split(" ") for c in caps] for vid, caps in captions.items()}))
        from clip2video.data.annotations import convert_msvd_pickle

        convert_msvd_pickle(pkl, ann / "raw-captions.json")
    elif protocol.startswith("vatex"):
        sub = ann / "vatex"  # the protocol's sub-folder, as the public split release arranges it
        files.append(_write_lines(sub / "train_list.txt", ids["train"]))
        test_name = "test1k5_sec_list.txt" if protocol == "vatex-1k5" else "test_list.txt"
        if ids["val"]:
            files.append(_write_lines(sub / "val_list.txt", ids["val"]))
        files.append(_write_lines(sub / test_name, ids["test"]))
        data = {vid: {"enCap": caps, "chCap": ["一个形状"] * len(caps)} for vid, caps in captions.items()}
        (sub / "vatex_data.json").write_text(json.dumps(data, ensure_ascii=False))
    suffix = ".avi" if protocol == "msvd" else ".mp4"
    for vid, (clip, _) in zip(order, clips, strict=True):
        _link_video(videos, vid, clip, suffix, frame_folders)
    return ProtocolData(
        protocol=protocol,
        data_root=Path(data_root),
        annotations=ann,
        videos=videos,
        train_ids=ids["train"],
        val_ids=ids["val"],
        test_ids=ids["test"],
        test_captions=test_captions,
        test_caption_video=np.asarray(test_owner, dtype=np.int64),
        num_train_pairs=sum(len(captions[vid]) for vid in ids["train"]),
        split_files=files,
        source_of={vid: clip for vid, (clip, _) in zip(order, clips, strict=True)},
    )


# ----------------------------------------------------------------------------- suite settings


def tiny_overrides(models: list[str], **sections: dict[str, Any]) -> dict[str, Any]:
    """Suite overrides that shrink a real suite to one seed, the tiny backbone, 32-pixel frames, one epoch."""
    out: dict[str, Any] = {
        "models": list(models),
        "seeds": [0],  # the shipped real suites run 3 seeds; one keeps the tests fast
        "backbone": {"clip": "tiny", "clip_weights": "none", "config": TINY_BACKBONE},
        "model": {"temporal_layers": 1},
        "frames": {"image_size": 32},
        "train": {"epochs": 1, "batch_size": 8},
        "eval": {"bootstrap": 50},
    }
    for name, values in sections.items():
        out[name] = {**out.get(name, {}), **values}
    return out


# The reduced smoke suite the runner and CLI tests share: two models, two epochs, 16 training clips.
SMOKE_SETTINGS: dict[str, dict[str, Any]] = {
    "synthetic": {"num_train": 16, "num_val": 4, "num_test_pairs": 4},
    "train": {"epochs": 2, "batch_size": 8},
    "eval": {"bootstrap": 50, "time_reversal": False},
}
SMOKE_MODELS = ["meanp", "clip2video"]


def smoke_overrides(models: list[str] | None = None) -> dict[str, Any]:
    """``run_suite(..., overrides=...)`` for the reduced smoke suite."""
    return {"models": list(models or SMOKE_MODELS), **json.loads(json.dumps(SMOKE_SETTINGS))}


def smoke_cli_args(models: list[str] | None = None, root: Path | None = None) -> list[str]:
    """The same settings as ``clip2video ablation`` arguments (``--models``, ``--set KEY=VALUE``);
    with ``root``, every output (data, runs, results) goes under it."""
    args = ["--suite", "smoke", "--models", *(models or SMOKE_MODELS)]
    for section, values in SMOKE_SETTINGS.items():
        for key, value in values.items():
            args += ["--set", f"{section}.{key}={json.dumps(value)}"]
    if root is not None:
        args += ["--data-root", str(root / "data"), "--runs-dir", str(root / "runs")]
        args += ["--results-dir", str(root / "results")]
    return args


# ----------------------------------------------------------------------------- independent metrics


# The tiny backbone on a real protocol from the command line (vatex-1k5 stand-ins).
TINY_CLI_SETS: dict[str, str] = {
    "backbone.clip": "tiny",
    "backbone.clip_weights": "none",
    "backbone.config": json.dumps(TINY_BACKBONE),
    "model.temporal_layers": "1",
    "frames.image_size": "32",
    "eval.bootstrap": "20",
    "eval.time_reversal": "false",
}


def tiny_cli_sets(**more: str) -> list[str]:
    """``--set KEY=VALUE`` arguments of :data:`TINY_CLI_SETS` (plus ``more``, dotted keys as
    ``train__epochs``)."""
    sets = {**TINY_CLI_SETS, **{key.replace("__", "."): value for key, value in more.items()}}
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def tiny_vatex_argv(data: Any, root: Path, *extra: object) -> list:
    """``ablation --suite vatex-1k5 --models meanp`` with the tiny backbone on ``data`` (a
    ``build_protocol_data`` result), records and results under ``root``; ``extra`` appended."""
    argv: list = ["ablation", "--suite", "vatex-1k5", "--models", "meanp", "--data-root", data.data_root]
    argv += ["--runs-dir", root / "runs", "--results-dir", root / "results", "--no-tracking", "--no-progress"]
    return [*argv, *tiny_cli_sets(train__epochs="1", train__batch_size="8"), *extra]


def verify_argv(data: Any, *extra: object) -> list:
    """``data verify --protocol vatex-1k5`` of ``data``'s annotations and videos; ``extra`` appended."""
    argv: list = ["data", "verify", "--protocol", "vatex-1k5", "--annotations", data.annotations]
    return [*argv, "--videos", data.videos, "--no-progress", *extra]


def brute_force_ranks(sim: np.ndarray, caption_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pessimistic ranks by the spec's formulas, one query at a time.

    t2v: 1 + #videos (other than the caption's own) scoring >= it. v2t: each video's caption
    group scores ``max`` over its captions; 1 + #other groups scoring >= the video's own group.
    """
    sim = np.asarray(sim, dtype=np.float64)
    caption_video = np.asarray(caption_video)
    num_videos = sim.shape[1]
    t2v = []
    for i, v in enumerate(caption_video):
        others = np.delete(sim[i], v)
        t2v.append(1 + int((others >= sim[i, v]).sum()))
    group = np.stack([sim[caption_video == u].max(axis=0) for u in range(num_videos)])  # [u, v]
    v2t = []
    for v in range(num_videos):
        own = group[v, v]
        v2t.append(1 + sum(int(group[u, v] >= own) for u in range(num_videos) if u != v))
    return np.asarray(t2v, dtype=float), np.asarray(v2t, dtype=float)


def metrics_of(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    """R@1/5/10 (percent), median and mean rank of one direction."""
    out = {f"{prefix}_R{k}": 100.0 * float((ranks <= k).mean()) for k in (1, 5, 10)}
    out[f"{prefix}_MdR"] = float(np.median(ranks))
    out[f"{prefix}_MnR"] = float(ranks.mean())
    return out


def brute_force_metrics(sim: np.ndarray, caption_video: np.ndarray) -> dict[str, float]:
    """Both directions' metrics under the pessimistic policy and the official (group) v2t."""
    t2v, v2t = brute_force_ranks(sim, caption_video)
    return {**metrics_of(t2v, "t2v"), **metrics_of(v2t, "v2t")}


@dataclass
class SmokeRun:
    """A finished run of the reduced smoke suite (records under ``runs / "smoke"``)."""

    data_root: Path
    runs: Path
    results: Path
    rows: dict[str, dict[str, float]]


def run_suite_with_tables(suite: Any, *, results_dir: Path | None = None, **kwargs: Any) -> Any:
    """``run_suite``, then (like ``clip2video ablation``) the suite's tables into ``results_dir``."""
    from clip2video.experiments.runner import run_suite
    from clip2video.report.tables import regenerate

    result = run_suite(suite, **kwargs)
    if results_dir is not None:
        written = regenerate(kwargs.get("runs_dir", "runs"), results_dir, [result.suite.name])
        result.results_files = written.get(result.suite.name, [])
    return result


def run_smoke(root: Path, models: list[str] | None = None, **kwargs: Any) -> SmokeRun:
    """The reduced smoke suite through ``run_suite`` (no tracking unless ``kwargs`` ask for it)."""
    kwargs.setdefault("tracking", False)
    result = run_suite_with_tables(
        "smoke",
        data_root=root / "data",
        runs_dir=root / "runs",
        results_dir=root / "results",
        overrides=smoke_overrides(models),
        progress=False,
        **kwargs,
    )
    return SmokeRun(root / "data", root / "runs", root / "results", dict(result.rows))


def assert_same_rows(runs_a: Path, runs_b: Path, suite: str, rows: list[str]) -> None:
    """Two runs' records agree bit for bit, row by row: metrics, extras, ranks, similarities, history."""
    from clip2video.engine.records import read_run_record

    for row in rows:
        a, b = read_run_record(runs_a / suite / row), read_run_record(runs_b / suite / row)
        assert a.metrics == b.metrics, row
        np.testing.assert_array_equal(a.load_sim(), b.load_sim(), err_msg=row)
        np.testing.assert_array_equal(a.ranks_t2v, b.ranks_t2v, err_msg=row)
        np.testing.assert_array_equal(a.ranks_v2t, b.ranks_v2t, err_msg=row)
        for key in ("order_acc", "legacy", "trained", "best_epoch"):
            assert a.extra.get(key) == b.extra.get(key), (row, key)
        history_a, history_b = (without_wall_clock(r.extra.get("history") or []) for r in (a, b))
        assert history_a == history_b, (row, "history")

"""The generated ``synthetic`` protocol: layout, determinism, exact reversed twins, captions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip2video.data import synthetic
from clip2video.data.synthetic import (
    COLOURS,
    EVENTS,
    FRAME_COUNTS,
    ORDER_WORD_PAIRS,
    draw_clip,
    generate_synthetic,
)
from clip2video.data.videos import find_video
from clip2video.errors import Clip2VideoError

TINY = {"num_train": 4, "num_val": 2, "num_test_pairs": 3, "captions_per_video": 2, "size": (32, 32)}


def _decode_all(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "data", seed=3, **TINY)


@pytest.fixture(scope="module")
def tiny_meta(tiny_root) -> dict:
    return json.loads((tiny_root / "annotations" / "synthetic_meta.json").read_text())


def test_counts_and_disjoint_splits(tiny_root, tiny_meta):
    ann = tiny_root / "annotations"
    train, val, test = (_lines(ann / f"{s}_list.txt") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (4, 2, 6)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert len(set(test)) == 6
    everything = set(train) | set(val) | set(test)
    data = json.loads((ann / "synthetic_data.json").read_text())
    assert set(data) == everything == set(tiny_meta["videos"])
    assert all(len(entry["enCap"]) == 2 for entry in data.values())
    assert all(vid.startswith("syn") and len(vid) == 8 and vid[3:].isdigit() for vid in everything)
    assert tiny_meta["seed"] == 3 and tiny_meta["settings"]["num_test_pairs"] == 3
    assert sorted(p.stem for p in (tiny_root / "videos").iterdir()) == sorted(everything)


def test_layout_reads_as_plain_vatex_style_files(tiny_root):
    ann = tiny_root / "annotations"
    data = json.loads((ann / "synthetic_data.json").read_text())
    for vid in _lines(ann / "test_list.txt"):
        captions = data[vid]["enCap"]
        assert isinstance(captions, list) and all(isinstance(c, str) and c for c in captions)
        path = find_video(tiny_root / "videos", vid)
        assert path.suffix == ".mp4"
        frames = _decode_all(path)
        assert frames.shape[1:] == (32, 32, 3) and len(frames) in FRAME_COUNTS


def test_every_test_twin_is_in_the_gallery_and_exactly_reversed(tiny_root, tiny_meta):
    test = _lines(tiny_root / "annotations" / "test_list.txt")
    records = tiny_meta["videos"]
    originals = 0
    for vid in test:
        twin = records[vid]["twin"]
        assert twin in test and records[twin]["twin"] == vid
        assert EVENTS[records[vid]["event"]][0] == EVENTS[records[twin]["event"]][0]
        assert records[vid]["event"] != records[twin]["event"]
        frames, twin_frames = (_decode_all(tiny_root / "videos" / f"{v}.mp4") for v in (vid, twin))
        assert frames.shape == twin_frames.shape
        np.testing.assert_array_equal(frames, twin_frames[::-1])
        assert not np.array_equal(frames, twin_frames)  # the event really changes over time
        originals += records[vid]["reversed_of"] is None
    assert originals == 3
    for record in records.values():
        if record["split"] != "test":
            assert record["twin"] is None


@pytest.mark.parametrize("n", FRAME_COUNTS)
def test_sampled_frames_are_symmetric_under_reversal(n):
    """The official pick rule (all frames if n <= 12, else linspace(0, n-1, 12) as int)."""
    picks = np.arange(n) if n <= 12 else np.linspace(0, n - 1, 12).astype(int)
    reversed_picks = (n - 1 - picks)[::-1]
    np.testing.assert_array_equal(picks, reversed_picks)


def test_twin_captions_differ_only_in_order_words(tiny_root, tiny_meta):
    data = json.loads((tiny_root / "annotations" / "synthetic_data.json").read_text())
    allowed = {frozenset(pair) for pair in ORDER_WORD_PAIRS}
    for vid, record in tiny_meta["videos"].items():
        if record["twin"] is None:
            continue
        for mine, theirs in zip(data[vid]["enCap"], data[record["twin"]]["enCap"], strict=True):
            a, b = mine.split(), theirs.split()
            assert len(a) == len(b), (mine, theirs)
            diffs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
            assert len(diffs) == 1, (mine, theirs)
            assert frozenset(diffs[0]) in allowed, (mine, theirs)


def test_determinism_same_seed_identical_other_seed_differs(tmp_path):
    small = {**TINY, "num_train": 2, "num_val": 1, "num_test_pairs": 2}
    roots = [
        generate_synthetic(tmp_path / name, seed=s, **small) for name, s in (("a", 7), ("b", 7), ("c", 8))
    ]
    names = ["synthetic_data.json", "synthetic_meta.json", "train_list.txt", "val_list.txt", "test_list.txt"]
    for name in names:
        assert (roots[0] / "annotations" / name).read_bytes() == (
            roots[1] / "annotations" / name
        ).read_bytes()
    ids = json.loads((roots[0] / "annotations" / "synthetic_data.json").read_text())
    for vid in ids:
        a, b = (_decode_all(r / "videos" / f"{vid}.mp4") for r in roots[:2])
        np.testing.assert_array_equal(a, b)
    other_frames = [_decode_all(roots[2] / "videos" / f"{vid}.mp4") for vid in ids]
    same_frames = [_decode_all(roots[0] / "videos" / f"{vid}.mp4") for vid in ids]
    assert any(
        x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(same_frames, other_frames, strict=True)
    )


def test_idempotent_and_refuses_to_clobber(tmp_path):
    small = {**TINY, "num_train": 1, "num_val": 1, "num_test_pairs": 1}
    root = generate_synthetic(tmp_path / "d", seed=0, **small)
    meta = root / "annotations" / "synthetic_meta.json"
    video = next((root / "videos").iterdir())
    stamps = (meta.stat().st_mtime_ns, video.stat().st_mtime_ns)
    assert generate_synthetic(root, seed=0, **small) == root
    assert (meta.stat().st_mtime_ns, video.stat().st_mtime_ns) == stamps
    with pytest.raises(Clip2VideoError, match="seed"):
        generate_synthetic(root, seed=1, **small)
    generate_synthetic(root, seed=1, overwrite=True, **{**small, "num_train": 2})
    assert json.loads(meta.read_text())["seed"] == 1
    assert len(_lines(root / "annotations" / "train_list.txt")) == 2
    assert len(list((root / "videos").iterdir())) == 2 + 1 + 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(Clip2VideoError, match="no synthetic dataset"):
        generate_synthetic(other, **small)


def test_missing_video_triggers_regeneration(tmp_path):
    small = {**TINY, "num_train": 1, "num_val": 0, "num_test_pairs": 1}
    root = generate_synthetic(tmp_path / "d", seed=0, **small)
    victim = next((root / "videos").iterdir())
    victim.unlink()
    with pytest.raises(
        Clip2VideoError,
        match=r"1 missing file\(s\): .*syn\d+\.mp4; regenerate it with `clip2video data synthetic",
    ):
        generate_synthetic(root, seed=0, **small)
    generate_synthetic(root, seed=0, overwrite=True, **small)
    assert victim.is_file()


@pytest.mark.parametrize(
    "bad", [{"size": (31, 32)}, {"size": (8, 8)}, {"captions_per_video": 4}, {"num_train": -1}]
)
def test_bad_settings_are_named(tmp_path, bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        generate_synthetic(tmp_path / "x", **{**TINY, **bad})


# ---- the drawn content matches its event (pixels far brighter than the dark background) ----


def _object_masks(frames: np.ndarray) -> np.ndarray:
    return frames.max(axis=-1) > 120


def _colour_of(frame: np.ndarray, mask: np.ndarray) -> str:
    mean = frame[mask].astype(float).mean(axis=0)
    return min(COLOURS, key=lambda name: float(np.sum((np.asarray(COLOURS[name]) - mean) ** 2)))


def _drawn_clips(num: int = 120) -> list:
    return [draw_clip(np.random.default_rng([99, i]), (32, 40)) for i in range(num)]


def test_every_event_is_drawn_and_matches_its_caption():
    clips = _drawn_clips()
    assert {c.event for c in clips} == set(EVENTS)
    for clip in clips:
        masks = _object_masks(clip.frames)
        area = masks.sum(axis=(1, 2))
        first, last = clip.frames[0], clip.frames[-1]
        if clip.event in ("appears", "disappears"):
            visible_at_start = area[0] > 0
            assert visible_at_start == (clip.event == "disappears") and (area[-1] > 0) != visible_at_start
            continue
        assert (area > 0).all(), clip.event
        ys, xs = np.mgrid[0:32, 0:40]
        cy = [(ys * m).sum() / m.sum() for m in masks]
        cx = [(xs * m).sum() / m.sum() for m in masks]
        if clip.event == "moves_right":
            assert cx[-1] > cx[0] + 5
        elif clip.event == "moves_left":
            assert cx[-1] < cx[0] - 5
        elif clip.event == "moves_down":
            assert cy[-1] > cy[0] + 5
        elif clip.event == "moves_up":
            assert cy[-1] < cy[0] - 5
        elif clip.event in ("grows", "shrinks"):
            assert (area[-1] > 3 * area[0]) == (clip.event == "grows")
            assert (area[0] > 3 * area[-1]) == (clip.event == "shrinks")
        else:  # two phases: the named colour comes first for *_before, last for *_after
            before = clip.event.endswith("_before")
            start, end = _colour_of(first, masks[0]), _colour_of(last, masks[-1])
            assert (start, end) == (
                (clip.colour, clip.second["colour"]) if before else (clip.second["colour"], clip.colour)
            )
        if clip.event.startswith("moves") or clip.event in ("grows", "shrinks"):
            assert {_colour_of(f, m) for f, m in zip(clip.frames, masks, strict=True)} == {clip.colour}


def test_objects_stay_inside_the_center_crop():
    """Frames 32x40 (H x W): the model's center crop keeps columns 4..35; nothing drawn outside."""
    for clip in _drawn_clips(60):
        masks = _object_masks(clip.frames)
        assert not masks[:, :, :4].any() and not masks[:, :, 36:].any()


def test_load_twins_on_generated_data(tiny_root, tiny_meta):
    test = _lines(tiny_root / "annotations" / "test_list.txt")
    twins = synthetic.load_twins(tiny_root / "annotations", test)
    for i, vid in enumerate(test):
        assert test[twins[i]] == tiny_meta["videos"][vid]["twin"]
        assert twins[twins[i]] == i
    train = _lines(tiny_root / "annotations" / "train_list.txt")
    assert (synthetic.load_twins(tiny_root / "annotations", train) == -1).all()


def test_load_split_reads_the_synthetic_test_split(tiny_root):
    annotations = pytest.importorskip("clip2video.data.annotations", reason="annotations.py not written yet")
    protocols = pytest.importorskip("clip2video.data.protocols", reason="protocols.py not written yet")
    if not hasattr(annotations, "load_split"):
        pytest.skip("clip2video.data.annotations.load_split is not written yet")
    try:
        protocol = protocols.get_protocol("synthetic")
    except Exception as exc:  # noqa: BLE001 - any failure means the registry is not ready
        pytest.skip(f"the 'synthetic' protocol is not registered yet ({exc})")
    ann = tiny_root / "annotations"
    split = annotations.load_split(protocol, ann, "test")
    test = _lines(ann / "test_list.txt")
    data = json.loads((ann / "synthetic_data.json").read_text())
    assert list(split.video_ids) == test
    assert list(split.captions) == [c for vid in test for c in data[vid]["enCap"]]
    assert np.asarray(split.caption_video).tolist() == [
        i for i, vid in enumerate(test) for _ in data[vid]["enCap"]
    ]


@pytest.mark.parametrize("n", FRAME_COUNTS)
def test_real_sampler_sees_a_twin_as_the_reversed_frames(tmp_path, n):
    """Through the protocol's own sampler (5 fps extraction, stride 1, 12 frames, 32 px)."""
    frames_mod = pytest.importorskip("clip2video.data.frames", reason="frames.py not written yet")
    from clip2video.data.video_writer import write_video

    clip = draw_clip(np.random.default_rng([5, n]), (32, 32), num_frames=n)
    paths = [
        write_video(tmp_path / f"{k}.mp4", c.frames, fps=5) for k, c in (("a", clip), ("b", clip.reversed()))
    ]
    sampler = frames_mod.FrameSampler(extraction_fps=5, stride=1, max_frames=12, image_size=32)
    (fa, ma), (fb, mb) = (sampler.load(p) for p in paths)
    count = min(n, 12)
    assert int(ma.sum()) == int(mb.sum()) == count
    assert torch_equal(fa[:count], fb[:count].flip(0))
    picks = sampler.source_indices(n, 5.0)
    assert len(picks) == count and [n - 1 - i for i in reversed(picks)] == picks


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))

"""FrameSampler: official picks, training jitter, CLIP preprocessing, file/folder parity, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clip2video.data import frames as frames_module
from clip2video.data.frames import CLIP_MEAN, CLIP_STD, FrameSampler, ffmpeg_output_frames
from clip2video.errors import VideoReadError
from tests.support.videogen import (
    decode_index,
    make_bframe_video,
    make_video,
    make_zero_frame_video,
    remux_faststart,
)

S = 32  # small output size keeps the tests fast


def float_linspace_int(n: int, count: int) -> list[int]:
    """numpy's float linspace cast to int, written out: j * ((n-1)/(count-1)), the end exact."""
    if count == 1:
        return [0]
    step = (n - 1) / (count - 1)
    return [int(j * step) for j in range(count - 1)] + [n - 1]


def brute_picks(n: int, stride: int, max_frames: int = 12) -> list[int]:
    count = n // stride
    if count == 0:
        return []
    candidates = float_linspace_int(n, count)
    if count <= max_frames:
        return candidates
    return [candidates[j] for j in float_linspace_int(count, max_frames)]


def indices_of(frames: torch.Tensor, mask: torch.Tensor) -> list[int]:
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return [decode_index(((f * std + mean) * 255).permute(1, 2, 0).numpy()) for f in frames[mask.bool()]]


# ----- picks ------------------------------------------------------------------------------------
def test_pick_hand_examples():
    assert FrameSampler(stride=1).pick(37) == [0, 3, 6, 9, 13, 16, 19, 22, 26, 29, 32, 36]
    assert FrameSampler(stride=2).pick(37) == [0, 2, 6, 8, 12, 14, 19, 21, 25, 27, 31, 36]
    assert FrameSampler(stride=1).pick(5) == [0, 1, 2, 3, 4]
    assert FrameSampler(stride=2).pick(9) == [0, 2, 5, 8]  # 4 candidates: 0, 2.67, 5.33, 8
    assert FrameSampler().pick(0) == []


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_pick_matches_brute_force(stride):
    sampler = FrameSampler(stride=stride)
    for n in range(stride, 400):
        picks = sampler.pick(n)
        assert picks == brute_picks(n, stride), n
        assert len(picks) == min(n // stride, 12)
        assert picks == sorted(set(picks)) and picks[0] == 0
        assert picks[-1] == (n - 1 if n // stride >= 2 else 0)  # linspace(0, n-1, 1) is [0]


def test_fewer_extracted_frames_than_stride_keep_the_first():
    assert FrameSampler(stride=2).pick(1) == [0]


def test_training_jitter_moves_interior_picks_within_half_a_step():
    n = 300  # 12 of 300 candidates: first step 27, h = 13
    base = FrameSampler(stride=1).pick(n)
    train = FrameSampler(stride=1, train=True)
    seen = set()
    for seed in range(50):
        picks = train.pick(n, np.random.default_rng(seed))
        assert picks[0] == base[0] and picks[-1] == base[-1]
        moves = np.array(picks[1:-1]) - np.array(base[1:-1])
        assert moves.min() >= -13 and moves.max() <= 12
        seen.update(moves.tolist())
    assert seen == set(range(-13, 13))  # every value of [-h, h) occurs
    assert train.pick(n, np.random.default_rng(3)) == train.pick(n, np.random.default_rng(3))
    np.random.seed(1)
    a = train.pick(n)
    np.random.seed(1)
    assert train.pick(n) == a  # rng=None: numpy's global state, as the official loader


def test_training_jitter_counts_steps_in_candidates():
    # stride 2, n = 300: 150 candidates, first step 13 candidates -> h = 6, moves of 2 frames each
    train = FrameSampler(stride=2, train=True)
    base = FrameSampler(stride=2).pick(300)
    candidates = float_linspace_int(300, 150)
    for seed in range(20):
        picks = train.pick(300, np.random.default_rng(seed))
        positions = [candidates.index(p) for p in picks]  # every pick is a candidate
        base_positions = [candidates.index(p) for p in base]
        moves = np.array(positions[1:-1]) - np.array(base_positions[1:-1])
        assert moves.min() >= -6 and moves.max() <= 5


def test_no_jitter_when_half_step_is_small():
    train = FrameSampler(stride=1, train=True)
    assert train.pick(60, np.random.default_rng(0)) == FrameSampler().pick(60)  # step 5, h = 2


def test_ffmpeg_rule_examples():
    # worked by hand from the rule: 25 fps, r = 5, frame i kept when (i+1)/5 >= k - 1.1
    assert ffmpeg_output_frames(25, 25) == [0, 1, 4, 9, 14, 19, 24]
    assert ffmpeg_output_frames(10, 5) == list(range(10))  # same rate: identity
    assert ffmpeg_output_frames(0, 25) == []
    sampler = FrameSampler()
    assert sampler.extracted_count(25, 25) == 7
    assert sampler.extracted_to_source(3, 25, 25) == 9
    with pytest.raises(IndexError, match="7 frames"):
        sampler.extracted_to_source(7, 25, 25)
    assert sampler.source_indices(25, 25) == [0, 1, 4, 9, 14, 19, 24]


# ----- pixels -----------------------------------------------------------------------------------
def test_preprocess_is_clip_pil_bicubic():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)  # H=240, W=320
    got = FrameSampler(image_size=224).preprocess([image])[0]
    # by hand: PIL bicubic short side -> 224 (320 * 224 / 240 = 298.67 -> 298), center crop, normalize
    resized = np.asarray(Image.fromarray(image).resize((298, 224), Image.BICUBIC), dtype=np.float32)
    left = int(round((298 - 224) / 2.0))
    crop = resized[:, left : left + 224] / 255.0
    expected = (crop - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    assert got.shape == (3, 224, 224)
    torch.testing.assert_close(got, torch.from_numpy(expected).permute(2, 0, 1), atol=1e-5, rtol=0)


def test_file_and_folder_give_identical_tensors(tmp_path):
    video = make_video(tmp_path / "clip.mp4", 90, 30, (80, 64), lossless=True)
    import decord

    reader = decord.VideoReader(str(video), num_threads=1)
    decoded = reader.get_batch(list(range(len(reader)))).asnumpy()
    folder = tmp_path / "clip"
    folder.mkdir()
    for k, src in enumerate(ffmpeg_output_frames(90, 30)):  # the extraction, losslessly
        Image.fromarray(decoded[src]).save(folder / f"{k + 1:08d}.png")
    sampler = FrameSampler(stride=1, image_size=S)
    from_file = sampler.load(video)
    from_folder = sampler.load(folder)
    assert torch.equal(from_file[0], from_folder[0]) and torch.equal(from_file[1], from_folder[1])
    assert indices_of(*from_file) == sampler.source_indices(90, 30)


def test_bframes_video_decodes_the_picked_frames(tmp_path):
    video = make_bframe_video(tmp_path / "bf.mp4", 300, 29.97)
    sampler = FrameSampler(stride=2, image_size=S)
    frames, mask = sampler.load(video)
    assert indices_of(frames, mask) == sampler.source_indices(300, 30000 / 1001)


def test_short_video_is_padded_and_masked_not_repeated(tmp_path):
    video = make_video(tmp_path / "short.mp4", 5, 5, (64, 64))  # 5 fps: 5 extracted frames
    frames, mask = FrameSampler(image_size=S).load(video)
    assert frames.shape == (12, 3, S, S) and frames.dtype == torch.float32 and mask.dtype == torch.long
    assert mask.tolist() == [1] * 5 + [0] * 7
    assert indices_of(frames, mask) == [0, 1, 2, 3, 4]
    assert frames[5:].abs().sum() == 0
    folder = tmp_path / "short_frames"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((16, 16, 3), 100 + k, np.uint8)).save(folder / f"{k + 1:08d}.png")
    _, folder_mask = FrameSampler(image_size=S).load(folder)
    assert folder_mask.tolist() == [1] * 3 + [0] * 9


# ----- bad files --------------------------------------------------------------------------------
def expect_read_error(path, video_id="vid7"):
    with pytest.raises(VideoReadError) as info:
        FrameSampler(image_size=S).load(path, video_id=video_id)
    assert info.value.video_id == video_id and str(path) in str(info.value)
    assert video_id in str(info.value)
    return info.value


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    video = make_video(root / "v.mp4", 100, 25, (64, 64), lossless=False)
    fast = remux_faststart(video, root / "fast.mp4")
    return video.read_bytes(), fast.read_bytes()


def test_missing_file(tmp_path):
    expect_read_error(tmp_path / "nope.mp4")


def test_zero_length_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    expect_read_error(tmp_path / "empty.mp4")


def test_garbage_bytes(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    expect_read_error(tmp_path / "junk.mp4")


@pytest.mark.parametrize("layout", ["index_last", "index_first"])
@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_truncated_mp4(tmp_path, good_bytes, layout, keep):
    data = good_bytes[0] if layout == "index_last" else good_bytes[1]
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: int(len(data) * keep)])
    expect_read_error(path)


def test_zero_frame_video(tmp_path):
    expect_read_error(make_zero_frame_video(tmp_path / "zero.mp4"))


def test_empty_frame_folder(tmp_path):
    (tmp_path / "vid7").mkdir()
    expect_read_error(tmp_path / "vid7")


def test_unreadable_frame_image(tmp_path):
    folder = tmp_path / "vid7"
    folder.mkdir()
    (folder / "00000001.jpg").write_bytes(b"not a jpeg")
    err = expect_read_error(folder)
    assert "00000001.jpg" in str(err)


class _FailingReader:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __len__(self) -> int:
        return 50

    def get_avg_fps(self) -> float:
        return 25.0

    def get_batch(self, indices):
        raise self.exc


@pytest.mark.parametrize("kind", ["runtime", "decord"])
def test_get_batch_failures_are_wrapped(monkeypatch, tmp_path, kind):
    from decord._ffi.base import DECORDError

    exc = RuntimeError("boom") if kind == "runtime" else DECORDError("past the cut")
    monkeypatch.setattr(frames_module, "open_video", lambda path, vid: _FailingReader(exc))
    path = tmp_path / "vid7.mp4"
    err = expect_read_error(path)
    assert type(exc).__name__ in err.reason and isinstance(err.__cause__, type(exc))


def test_bad_settings():
    with pytest.raises(ValueError, match="stride"):
        FrameSampler(stride=0)
    with pytest.raises(ValueError, match="frame rate"):
        ffmpeg_output_frames(10, 0.0)


# ----------------------------------------------------------------------------------------------
# frames.decode
# ----------------------------------------------------------------------------------------------


def test_decode_mode_defaults_to_direct_and_is_checked():
    assert FrameSampler().decode == "direct"
    assert FrameSampler(decode="official-jpeg").decode == "official-jpeg"
    with pytest.raises(ValueError, match="frames.decode = 'jpeg'.*direct, official-jpeg"):
        FrameSampler(decode="jpeg")


def test_range_conversion_anchors():
    """Limited-range black, white and neutral chroma map to full range 0, 255 and 128."""
    y = np.array([0, 16, 235, 255], np.uint8)
    assert frames_module.luma_to_full_range(y).tolist() == [0, 0, 255, 255]
    c = np.array([16, 128, 240], np.uint8)
    assert frames_module.chroma_to_full_range(c).tolist() == [0, 128, 255]


def test_official_jpeg_mode_keeps_the_instants_and_changes_only_pixels(tmp_path):
    """The JPEG route picks the same source frames (the index code survives JPEG) and its pixels
    differ from the direct decode by a few levels, not by a different frame."""
    video = make_video(tmp_path / "v.mp4", 90, 30, (64, 64), lossless=False)
    direct, mask = FrameSampler(image_size=64).load(video)
    jpeg, jpeg_mask = FrameSampler(image_size=64, decode="official-jpeg").load(video)
    assert torch.equal(mask, jpeg_mask)
    real = mask.bool()
    assert not torch.equal(direct[real], jpeg[real])
    levels = ((direct[real] - jpeg[real]) * torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255).abs()
    assert 0 < float(levels.mean()) < 8


def test_official_jpeg_mode_and_the_frame_cache_keep_modes_apart(tmp_path):
    from clip2video.data.frame_cache import FrameCache

    video = make_video(tmp_path / "v.mp4", 40, 25, (64, 64), lossless=False)
    cache = FrameCache(64 * 2**20)
    direct = FrameSampler(image_size=64).attach_cache(cache).load(video)[0]
    jpeg = FrameSampler(image_size=64, decode="official-jpeg").attach_cache(cache).load(video)[0]
    assert not torch.equal(direct, jpeg)  # the second load was not served the first mode's frames
    again = FrameSampler(image_size=64, decode="official-jpeg").attach_cache(cache).load(video)[0]
    assert torch.equal(again, jpeg)


def test_official_jpeg_mode_names_an_unreadable_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(VideoReadError, match="bad"):
        FrameSampler(decode="official-jpeg").load(bad)


def test_the_suite_setting_reaches_the_sampler_and_is_validated(tmp_path, capsys):
    from clip2video.cli import main
    from clip2video.experiments.suite import load_suite

    assert load_suite("smoke").settings["frames"]["decode"] == "direct"
    assert (
        load_suite("smoke", {"frames": {"decode": "official-jpeg"}}).settings["frames"]["decode"]
        == "official-jpeg"
    )
    code = main(
        [
            "ablation",
            "--suite",
            "smoke",
            "--set",
            "frames.decode=jpg",
            "--no-tracking",
            "--runs-dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "frames.decode" in err and "official-jpeg" in err and err.count("\n") == 1

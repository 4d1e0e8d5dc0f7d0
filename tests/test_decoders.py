"""Frame decoders and pixel preprocessing: PyAV picks what decord picks, folders have no gaps,
``check_decodes`` decodes every frame, and the vectorized preprocessing equals open_clip's."""

from __future__ import annotations

import sys

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from clip2video.data import videos as videos_module
from clip2video.data.frames import CLIP_MEAN, CLIP_STD, FrameSampler
from clip2video.data.video_writer import write_video
from clip2video.data.videos import PyAVReader, frame_files, open_video, video_decoder
from clip2video.errors import VideoReadError
from tests.support.decoding import check_decodes
from tests.support.videogen import index_coded_frames, make_bframe_video, make_video
from tests.test_ffmpeg_parity import tensor_indices

S = 32


# ----- PyAV vs decord ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "30fps": make_video(root / "a.mp4", 90, 30, (64, 48), lossless=False),
        "29.97": make_video(root / "b.mp4", 200, 29.97, (64, 64), lossless=False),
        "bframes": make_bframe_video(root / "c.mp4", 150, 25),
        "short": make_video(root / "d.mp4", 4, 5, (64, 64)),
    }


@pytest.mark.parametrize("name", ["30fps", "29.97", "bframes", "short"])
def test_pyav_reader_matches_decord(clips, name):
    import decord

    path = clips[name]
    ref = decord.VideoReader(str(path), num_threads=1)
    ours = PyAVReader(path)
    assert len(ours) == len(ref)
    assert ours.get_avg_fps() == pytest.approx(ref.get_avg_fps(), rel=1e-6)
    wanted = sorted({0, len(ref) // 3, len(ref) // 2, len(ref) - 1})
    a = ref.get_batch(wanted).asnumpy()
    b = ours.get_batch(wanted).asnumpy()
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    from tests.support.videogen import decode_index

    assert [decode_index(f) for f in b] == [decode_index(f) for f in a] == wanted
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # both convert yuv->rgb with swscale


@pytest.mark.parametrize("name", ["30fps", "29.97", "bframes", "short"])
@pytest.mark.parametrize("stride", [1, 2])
def test_sampler_picks_the_same_frames_with_either_decoder(clips, name, stride, monkeypatch):
    sampler = FrameSampler(stride=stride, image_size=S)
    monkeypatch.setenv("CLIP2VIDEO_DECODER", "decord")
    f_decord, m_decord = sampler.load(clips[name])
    monkeypatch.setenv("CLIP2VIDEO_DECODER", "pyav")
    f_pyav, m_pyav = sampler.load(clips[name])
    assert torch.equal(m_decord, m_pyav)
    assert tensor_indices(f_pyav, m_pyav) == tensor_indices(f_decord, m_decord)
    torch.testing.assert_close(f_pyav, f_decord, atol=0.1, rtol=0)  # a grey level or two, normalized


def test_pyav_is_used_when_decord_is_missing(monkeypatch, clips):
    monkeypatch.delenv("CLIP2VIDEO_DECODER", raising=False)
    assert video_decoder() == "decord"
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord now fails
    assert video_decoder() == "pyav"
    assert isinstance(open_video(clips["30fps"]), PyAVReader)
    frames, mask = FrameSampler(image_size=S).load(clips["30fps"])
    assert mask.sum() == 12


def test_unknown_decoder_setting(monkeypatch):
    monkeypatch.setenv("CLIP2VIDEO_DECODER", "opencv")
    with pytest.raises(ValueError, match="decord, pyav"):
        video_decoder()


@pytest.mark.parametrize("content", [b"", b"garbage" * 100])
def test_pyav_bad_files_are_read_errors(tmp_path, monkeypatch, content):
    monkeypatch.setenv("CLIP2VIDEO_DECODER", "pyav")
    path = tmp_path / "v9.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoReadError, match="v9"):
        FrameSampler(image_size=S).load(path)


# ----- frame folders ----------------------------------------------------------------------------
def _folder(tmp_path, numbers, name="vid3"):
    folder = tmp_path / name
    folder.mkdir()
    for n in numbers:
        Image.fromarray(np.full((16, 16, 3), n, np.uint8)).save(folder / f"{n:08d}.jpg")
    return folder


def test_folder_with_a_gap_is_an_error_naming_folder_and_file(tmp_path):
    folder = _folder(tmp_path, [1, 2, 3, 4, 6, 7, 8])
    with pytest.raises(VideoReadError) as info:
        FrameSampler(image_size=S).load(folder)
    message = str(info.value)
    assert "00000005.jpg" in message and str(folder) in message and "gap" in message
    with pytest.raises(VideoReadError, match="00000005.jpg"):
        check_decodes(folder)


def test_folder_numbering_may_start_anywhere_and_is_numeric(tmp_path):
    assert [p.name for p in frame_files(_folder(tmp_path, [3, 4, 5], "a"))] == [
        "00000003.jpg",
        "00000004.jpg",
        "00000005.jpg",
    ]
    mixed = tmp_path / "b"
    mixed.mkdir()
    for n in (1, 2, 10, 9, 8, 7, 6, 5, 4, 3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / f"{n}.png")
    assert [p.stem for p in frame_files(mixed)] == [str(n) for n in range(1, 11)]


# ----- check_decodes ----------------------------------------------------------------------------
def _corrupt(path, tmp_path, frac):
    data = bytearray(path.read_bytes())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    assert 0 < mdat < moov, "the writer puts the index last"
    start = mdat + int((moov - mdat) * frac)
    data[start : start + 300] = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    out = tmp_path / f"bad{int(frac * 100)}.mp4"
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    root = tmp_path_factory.mktemp("tex")
    return write_video(root / "t.mp4", index_coded_frames(60, 64, 64, texture=True), 25, lossless=False)


def test_check_decodes_passes_good_videos_and_folders(textured, clips, tmp_path):
    assert check_decodes(textured) == 60
    assert check_decodes(clips["bframes"]) == 150
    assert check_decodes(_folder(tmp_path, [1, 2, 3])) == 3


@pytest.mark.parametrize("frac", [0.3, 0.6, 0.9])
def test_check_decodes_fails_a_corrupt_payload_after_frame_0(textured, tmp_path, frac):
    bad = _corrupt(textured, tmp_path, frac)
    with pytest.raises(VideoReadError, match="do not decode") as info:
        check_decodes(bad, video_id="v1")
    assert info.value.video_id == "v1" and str(bad) in str(info.value)


def test_check_decodes_fails_a_folder_whose_last_jpg_is_corrupt(tmp_path):
    folder = _folder(tmp_path, [1, 2, 3, 4])
    last = folder / "00000004.jpg"
    last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])
    with pytest.raises(VideoReadError, match="00000004.jpg"):
        check_decodes(folder)


def test_check_decodes_fails_a_truncated_file(textured, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(textured.read_bytes()[:5000])
    with pytest.raises(VideoReadError):
        check_decodes(cut)


# ----- preprocessing ----------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(240, 320), (48, 64), (64, 48), (51, 77), (64, 64), (20, 30)])
@pytest.mark.parametrize("size", [64, 32])
def test_vectorized_preprocess_equals_open_clip_bit_for_bit(hw, size):
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    images = [rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8) for _ in range(5)]
    transform = open_clip.image_transform(size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    expected = torch.stack([transform(Image.fromarray(i)) for i in images])
    sampler = FrameSampler(image_size=size, max_frames=8)
    assert torch.equal(sampler.preprocess(images), expected)
    padded = sampler.preprocess(images, pad_to=8)
    assert padded.shape == (8, 3, size, size)
    assert torch.equal(padded[:5], expected) and not padded[5:].any()
    grey = Image.fromarray(images[0][..., 0])  # mode "L" is converted to RGB first
    assert torch.equal(sampler.preprocess([grey])[0], transform(grey.convert("RGB")))


def test_pad_returns_fresh_zero_padded_frames():
    sampler = FrameSampler(image_size=4, max_frames=5)
    frames = torch.ones(3, 3, 4, 4)
    out = sampler._pad(frames)
    assert out.shape == (5, 3, 4, 4) and torch.equal(out[:3], frames) and not out[3:].any()
    out[0].zero_()
    assert frames.all(), "the padded copy does not share memory with the cached frames"


def test_module_keeps_decoder_helpers():
    assert videos_module.DECODERS == ("decord", "pyav")

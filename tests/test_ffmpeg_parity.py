"""The decord sampler picks the same source frames as the official ffmpeg-then-JPEG pipeline.

Each case writes an index-coded video, runs the official extraction command
(``ffmpeg -v 0 -i video -r 5 -q 0 out/%08d.jpg``), reads the index back from every JPEG, applies
the official picks (written out independently below) and compares with what the sampler decodes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip2video.data.frames import CLIP_MEAN, CLIP_STD, FrameSampler
from tests.support.videogen import decode_index, index_coded_frames, make_video, write_video

FFMPEG = "/usr/bin/ffmpeg"
pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(
        not Path(FFMPEG).exists(), reason=f"{FFMPEG} is not installed (apt-get install ffmpeg)"
    ),
]

RATES = [25, 29.97, 30, 60]
SECONDS = [1, 2.3, 7, 60]
# 50 fps hits the rule's exact ties (delta == -1.1); 23.976 and 24 are film rates
EXTRA = [(50, 7), (23.976, 7), (24, 2.3)]
SIZE = 32  # sampler output; the videos are 64x64


def official_picks(n: int, stride: int, max_frames: int = 12) -> list[int]:
    """The official selection among n extracted frames, written out from the spec."""
    count = n // stride
    candidates = [int(x) for x in np.linspace(0, n - 1, num=count)]
    if count <= max_frames:
        return candidates
    return [candidates[int(x)] for x in np.linspace(0, count - 1, num=max_frames)]


def extract(video: Path, out: Path) -> list[int]:
    """Run the official extraction and return the source index shown in each JPEG."""
    out.mkdir()
    cmd = [FFMPEG, "-v", "0", "-i", str(video), "-r", "5", "-q", "0", f"{out}/%08d.jpg"]
    subprocess.run(cmd, check=True)
    return [decode_index(np.asarray(Image.open(p))) for p in sorted(out.glob("*.jpg"))]


def tensor_indices(frames: torch.Tensor, mask: torch.Tensor) -> list[int]:
    """Undo CLIP's normalisation and read the coded index of every real frame."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    real = frames[mask.bool()]
    return [decode_index(((f * std + mean) * 255).permute(1, 2, 0).numpy()) for f in real]


@pytest.fixture(scope="module", params=[(fps, secs) for fps in RATES for secs in SECONDS] + EXTRA, ids=str)
def extracted(request, tmp_path_factory):
    fps, secs = request.param
    num_frames = int(round(fps * secs))
    root = tmp_path_factory.mktemp(f"v{fps}_{secs}")
    video = make_video(root / "clip.mp4", num_frames, fps, (64, 64), lossless=False)
    jpg_indices = extract(video, root / "frames")
    return video, root / "frames", num_frames, fps, jpg_indices


def test_ffmpeg_output_rule(extracted):
    video, _, num_frames, fps, jpg_indices = extracted
    sampler = FrameSampler()
    assert sampler.extracted_count(num_frames, fps) == len(jpg_indices)
    for k in {0, 1, 2, len(jpg_indices) // 2, len(jpg_indices) - 1}:
        assert sampler.extracted_to_source(k, fps, num_frames) == jpg_indices[k]
    # from output 2 on, output k shows the frame that starts in [k/5 - 0.22 s - 1/fps, k/5 - 0.22 s)
    offsets = np.array(jpg_indices[2:]) / fps - np.arange(2, len(jpg_indices)) / 5
    assert np.all(offsets < -0.22 + 1e-9) and np.all(offsets >= -0.22 - 1 / fps - 1e-9)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
@pytest.mark.parametrize("stride", [1, 2])
def test_decoder_picks_match_official_jpegs(extracted, stride, decoder, monkeypatch):
    monkeypatch.setenv("CLIP2VIDEO_DECODER", decoder)
    video, folder, num_frames, fps, jpg_indices = extracted
    expected = [jpg_indices[k] for k in official_picks(len(jpg_indices), stride)]
    sampler = FrameSampler(stride=stride, image_size=SIZE)
    assert sampler.source_indices(num_frames, fps) == expected
    frames, mask = sampler.load(video)
    assert mask.tolist() == [1] * len(expected) + [0] * (12 - len(expected))
    assert tensor_indices(frames, mask) == expected
    # the frame folder is the extracted frames: the same instants
    folder_frames, folder_mask = sampler.load(folder, video_id="clip")
    assert folder_mask.tolist() == mask.tolist()
    assert tensor_indices(folder_frames, folder_mask) == expected


def test_training_jitter_same_instants_file_and_folder(extracted):
    video, folder, num_frames, fps, jpg_indices = extracted
    sampler = FrameSampler(stride=1, image_size=SIZE, train=True)
    picks = sampler.pick(len(jpg_indices), np.random.default_rng(7))
    from_file = tensor_indices(*sampler.load(video, rng=np.random.default_rng(7)))
    from_folder = tensor_indices(*sampler.load(folder, rng=np.random.default_rng(7)))
    assert from_file == from_folder == [jpg_indices[k] for k in picks]


def test_ffmpeg_present():
    assert shutil.which(FFMPEG)


# ----------------------------------------------------------------------------------------------
# frames.decode = "official-jpeg": the official extraction's pixels, from the raw video
# ----------------------------------------------------------------------------------------------

# (pixel format, codec, fps, (width, height)): textured frames (sharp colour edges), where the JPEG
# route moves pixels the most; MSR-VTT / MSVD / VATEX videos are 8-bit YUV 4:2:0.
JPEG_CASES = [
    ("yuv420p", "libx264", 29.97, (320, 240)),
    ("yuv444p", "libx264", 25, (160, 120)),
    ("yuv420p", "mpeg4", 30, (176, 144)),
]


@pytest.fixture(scope="module", params=JPEG_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}fps")
def textured(request, tmp_path_factory):
    pix_fmt, codec, fps, (width, height) = request.param
    root = tmp_path_factory.mktemp(f"jpeg-{pix_fmt}-{codec}")
    frames = index_coded_frames(int(round(fps * 3)), height, width, texture=True)
    video = write_video(root / "clip.mp4", frames, fps, lossless=pix_fmt == "yuv444p", codec=codec)
    extract(video, root / "frames")
    return video, root / "frames", fps


def decoded_frames(video: Path) -> list:
    import av

    with av.open(str(video)) as container:
        return list(container.decode(video=0))


def test_official_jpeg_route_equals_every_official_jpeg_bit_for_bit(textured):
    """Every frame the official command writes, against the in-memory route on the same source
    frame: identical RGB pixels after the official loader's PIL decode. The direct decode is not."""
    from clip2video.data.frames import OfficialJpeg, ffmpeg_output_frames

    video, folder, fps = textured
    frames = decoded_frames(video)
    jpegs = sorted(folder.glob("*.jpg"))
    mapping = ffmpeg_output_frames(len(frames), fps)
    assert len(mapping) == len(jpegs)
    route = OfficialJpeg()
    worst_jpeg = worst_direct = 0
    for k, path in enumerate(jpegs):
        with Image.open(path) as image:
            official = np.asarray(image.convert("RGB"), dtype=np.int16)
        source = frames[mapping[k]]
        ours = np.asarray(route.image(source), dtype=np.int16)
        direct = source.to_ndarray(format="rgb24").astype(np.int16)
        worst_jpeg = max(worst_jpeg, int(np.abs(ours - official).max()))
        worst_direct = max(worst_direct, int(np.abs(direct - official).max()))
    assert worst_jpeg == 0, f"largest difference from the official JPEGs: {worst_jpeg} levels"
    assert worst_direct > 10  # the direct decode differs (what the mode exists for)


def test_official_jpeg_mode_loads_what_the_official_folder_holds(textured):
    """The sampler on the raw video with frames.decode = "official-jpeg" gives exactly the tensors
    it gives on the official frame folder (same picks, same pixels, same preprocessing)."""
    video, folder, _ = textured
    for stride in (1, 2):
        sampler = FrameSampler(stride=stride, image_size=112, decode="official-jpeg")
        frames, mask = sampler.load(video)
        folder_frames, folder_mask = sampler.load(folder, video_id="clip")
        assert torch.equal(mask, folder_mask) and torch.equal(frames, folder_frames)
        direct, _ = FrameSampler(stride=stride, image_size=112).load(video)
        assert not torch.equal(direct, folder_frames)

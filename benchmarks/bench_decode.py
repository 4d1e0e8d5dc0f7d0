"""Decoding benchmark: the decord sampler against the official two-step route, same frames.

(a) ``FrameSampler.load(video)``: decord decodes only the picked source frames.
(b) the official route: ``ffmpeg -v 0 -i video -r 5 -q 0 dir/%08d.jpg`` extracts every frame at
    5 fps to JPEG, then the same sampler loads the picked JPEGs from the folder.
(c) ``frames.decode = "official-jpeg"``: the sampler passes each picked frame through the official
    JPEG route in memory; its frames are compared with (b)'s bit for bit, and its cost with (a)'s.
Both go through the same CLIP preprocessing. Videos are generated (index-coded frames with moving
texture, lossy yuv420 H.264), so the benchmark also checks both routes use the same instants.
Then both routes over all videos with every core: ours as evaluation runs it (a DataLoader over
``VideoDataset`` with ``data.num_workers=-1``, one decoder thread per worker), the official one
as its extraction scripts run it (a pool of ffmpeg processes, one per core, then the JPEG
loading); and the DataLoader with 0, 1, 2 and all workers shows how throughput scales.
The serial comparison gives decord the process's threads (``torch.get_num_threads()``).

    python -m benchmarks.bench_decode --videos 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from clip2video.data.datasets import VideoDataset, available_cores, resolve_num_workers
from clip2video.data.frames import FrameSampler
from clip2video.data.video_writer import decode_index, index_coded_frames, write_video
from clip2video.data.videos import decoder_threads

ROOT = Path(__file__).resolve().parents[1]

TARGET = 3.0
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def cpu_seconds() -> tuple[float, float]:
    """(this process, finished children) user+system CPU seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def make_videos(root: Path, count: int, size: tuple[int, int], seed: int) -> list[tuple[Path, float, int]]:
    """``count`` lossy videos of 10-30 s at 25/29.97/30 fps; returns (path, fps, frames)."""
    rng = np.random.default_rng(seed)
    rates = [25.0, 29.97, 30.0]
    videos = []
    for i in tqdm(range(count), desc="generate videos", unit="video"):
        fps = rates[i % len(rates)]
        frames = int(round(fps * rng.uniform(10, 30)))
        pixels = index_coded_frames(frames, size[1], size[0], texture=True, seed=i)
        path = write_video(root / f"video{i:03d}.mp4", pixels, fps, lossless=False)
        videos.append((path, fps, frames))
    return videos


def official_route(
    video: Path, work: Path, sampler: FrameSampler
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """ffmpeg extraction to JPEG, then the sampler on the folder; also the coded index of each pick."""
    folder = work / video.stem
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cmd = [FFMPEG, "-v", "0", "-i", str(video), "-r", "5", "-q", "0", f"{folder}/%08d.jpg"]
    subprocess.run(cmd, check=True)
    frames, mask = sampler.load(folder, video_id=video.stem)
    files = sorted(folder.glob("*.jpg"))
    picked = [decode_index(np.asarray(Image.open(files[k]))) for k in sampler.pick(len(files))]
    shutil.rmtree(folder)
    return frames, mask, picked


def time_routes(videos, sampler: FrameSampler, work: Path) -> list[dict]:
    jpeg = dataclasses.replace(sampler, decode="official-jpeg")
    jpeg.load(videos[0][0])  # warm up the encoder
    rows = []
    for path, fps, num_frames in tqdm(videos, desc="decord vs ffmpeg+jpeg", unit="video"):
        expected = sampler.source_indices(num_frames, fps)
        cpu0, kids0 = cpu_seconds()
        t0 = time.perf_counter()
        frames_a, mask_a = sampler.load(path)
        wall_a = time.perf_counter() - t0
        cpu1, kids1 = cpu_seconds()
        t1 = time.perf_counter()
        frames_b, mask_b, picked = official_route(path, work, sampler)
        wall_b = time.perf_counter() - t1
        cpu2, kids2 = cpu_seconds()
        t2 = time.perf_counter()
        frames_c, _ = jpeg.load(path)
        wall_c = time.perf_counter() - t2
        cpu3, kids3 = cpu_seconds()
        if picked != expected or not torch.equal(mask_a, mask_b):
            raise AssertionError(f"{path.name}: the routes picked different instants: {expected} vs {picked}")
        rows.append(
            {
                "video": path.name,
                "fps": fps,
                "frames": num_frames,
                "seconds": round(num_frames / fps, 2),
                "decord_wall_s": wall_a,
                "decord_cpu_s": (cpu1 - cpu0) + (kids1 - kids0),
                "official_wall_s": wall_b,
                "official_cpu_s": (cpu2 - cpu1) + (kids2 - kids1),
                "official_jpeg_mode_wall_s": wall_c,
                "official_jpeg_mode_cpu_s": (cpu3 - cpu2) + (kids3 - kids2),
                "official_jpeg_mode_max_abs_diff_vs_ffmpeg": float((frames_c - frames_b).abs().max()),
                "same_instants": True,
                "max_abs_pixel_diff": float((frames_a - frames_b).abs().max()),  # JPEG q=0 vs decoded
            }
        )
    return rows


def official_parallel(videos, sampler: FrameSampler, work: Path, jobs: int) -> float:
    """Wall seconds of the official route over all videos with ``jobs`` ffmpeg+load jobs at once."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda v: official_route(v[0], work, sampler), videos))
    return time.perf_counter() - t0


def loader_throughput(paths: list[Path], sampler: FrameSampler, workers: list[int]) -> list[dict]:
    out = []
    for num_workers in workers:
        num_workers = resolve_num_workers(num_workers, phased=True)  # as evaluation runs it on a CPU
        dataset = VideoDataset(paths, sampler)
        loader = DataLoader(dataset, batch_size=2, num_workers=num_workers)
        t0 = time.perf_counter()
        seen = 0
        for index, _frames, _mask in tqdm(loader, desc=f"DataLoader workers={num_workers}", unit="batch"):
            seen += len(index)
        wall = time.perf_counter() - t0
        out.append({"workers": num_workers, "videos": seen, "wall_s": wall, "videos_per_s": seen / wall})
    return out


def machine() -> dict:
    import decord

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    ffmpeg_version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.split("\n")[
        0
    ]
    return {
        "platform": platform.platform(),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "decord_threads_serial": decoder_threads(),
        "load_avg": list(os.getloadavg()),
        "decord": decord.__version__,
        "ffmpeg": ffmpeg_version,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the generated videos")
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0, 1, 2, all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "perf_decode.json")
    args = parser.parse_args(argv)
    cores = available_cores()
    workers = args.workers or sorted({0, 1, 2, resolve_num_workers(-1, phased=True)})
    width, height = (int(v) for v in args.size.lower().split("x"))
    sampler = FrameSampler(stride=args.stride, image_size=args.image_size)
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        tmp = Path(tmp)
        videos = make_videos(tmp / "videos", args.videos, (width, height), args.seed)
        sampler.load(videos[0][0])  # warm up imports and the transform
        rows = time_routes(videos, sampler, tmp / "frames")
        official_all = official_parallel(videos, sampler, tmp / "frames-par", cores)
        loaders = loader_throughput([v[0] for v in videos], sampler, workers)
        auto = loader_throughput([v[0] for v in videos], sampler, [-1])[0]
    decord_wall = sum(r["decord_wall_s"] for r in rows)
    official_wall = sum(r["official_wall_s"] for r in rows)
    decord_cpu = sum(r["decord_cpu_s"] for r in rows)
    official_cpu = sum(r["official_cpu_s"] for r in rows)
    ratio_wall = official_wall / decord_wall
    ratio_cpu = official_cpu / decord_cpu
    ratio_all = official_all / auto["wall_s"]
    jpeg_cpu = sum(r["official_jpeg_mode_cpu_s"] for r in rows)
    result = {
        "benchmark": "decode: decord sampler vs ffmpeg -r 5 JPEG extraction + JPEG loading (same frames)",
        "command": "python -m benchmarks.bench_decode " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "note": "shared 2-core machine with other jobs running: wall times are noisy; CPU seconds count "
        "ffmpeg's own threads (children) as well",
        "settings": {
            "videos": args.videos,
            "size": f"{width}x{height}",
            "stride": args.stride,
            "max_frames": sampler.max_frames,
            "image_size": args.image_size,
            "codec": "libx264 yuv420p (lossy), preset ultrafast",
        },
        "per_video": rows,
        "summary": {
            "decord_wall_s_per_video": decord_wall / len(rows),
            "official_wall_s_per_video": official_wall / len(rows),
            "decord_videos_per_cpu_s": len(rows) / decord_cpu,
            "official_videos_per_cpu_s": len(rows) / official_cpu,
            "speedup_wall_serial": ratio_wall,
            "speedup_per_core": ratio_cpu,
            "official_jpeg_mode_cpu_s_per_video": jpeg_cpu / len(rows),
            "official_jpeg_mode_cost_vs_direct_per_core": jpeg_cpu / decord_cpu,
            "official_jpeg_mode_max_abs_diff_vs_ffmpeg": max(
                r["official_jpeg_mode_max_abs_diff_vs_ffmpeg"] for r in rows
            ),
            "official_all_cores_wall_s": official_all,
            "loader_all_cores_wall_s": auto["wall_s"],
            "all_cores_workers": auto["workers"],
            "speedup_wall": ratio_all,
            "target": TARGET,
            "target_met_wall": ratio_all >= TARGET,
            "target_met_wall_serial": ratio_wall >= TARGET,
            "target_met_per_core": ratio_cpu >= TARGET,
        },
        "dataloader": loaders,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = result["summary"]
    print(
        f"decord {summary['decord_wall_s_per_video'] * 1e3:.0f} ms/video, official "
        f"{summary['official_wall_s_per_video'] * 1e3:.0f} ms/video: x{ratio_wall:.1f} wall serial, "
        f"x{ratio_cpu:.1f} per core; all cores x{ratio_all:.1f} wall (target x{TARGET}) -> {args.out}"
    )
    print(
        f"frames.decode = official-jpeg: {summary['official_jpeg_mode_cpu_s_per_video'] * 1e3:.0f} CPU ms/video, "
        f"x{summary['official_jpeg_mode_cost_vs_direct_per_core']:.2f} the direct mode's CPU; largest difference from "
        f"the ffmpeg JPEG folders: {summary['official_jpeg_mode_max_abs_diff_vs_ffmpeg']:g}"
    )
    for row in loaders:
        print(f"  DataLoader workers={row['workers']}: {row['videos_per_s']:.2f} videos/s")
    return result


if __name__ == "__main__":
    main()

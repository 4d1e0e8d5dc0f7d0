"""GPU check: CLIP image-encoder throughput, MSVD-size encode-once evaluation, bf16 vs float32 parity.

One prepared script for an H100/H200-class GPU (at most ~5 minutes; a short table is printed
last). It also runs on the CPU at a tiny size, so that CI keeps it working. Weights are random
(ViT-B/32-sized at full size) and frames and captions are generated on the device: every time is
model-side only (no decoding, no tokenising).

    python -m benchmarks.gpu.check                                   # full size, cuda if available
    python -m benchmarks.gpu.check --size tiny --device cpu --out /tmp/gpu-check

Phases, each timed and each skipped (with the reason recorded) when the time budget runs low:

a. encoder: frames/s of the CLIP image encoder at batch 768 in float32, float32 with TF32 matmuls,
   bf16 autocast and bf16 weights (no autocast: nn.MultiheadAttention's fused inference path,
   which runs SDPA kernels, only runs with autocast off). Reference: 21,400 frames/s, the official
   code's fp16 ViT-B/32 encoder on an H200 at batch 768; target >= 1.5x (32,100 frames/s).
b. msvd: encode-once evaluation of the full ``clip2video`` model at MSVD size (670 videos x 12
   frames, 27,763 captions of 32 tokens, 1+ captions per video): encode videos + encode captions
   (bf16 autocast, then float32) + similarity + ranks and metrics through the evaluation engine
   (``evaluate_embeddings`` -> ``clip2video.metrics`` on the device's matrix). Target <= 5 s.
c. parity: bf16 vs float32 on the same inputs: similarity max |diff| (absolute and relative to the
   largest |logit|), embedding differences, and both metric dicts side by side.
d. compile: ``torch.compile`` of the bf16 image encoder, in a subprocess killed at a time cap
   (compilation can take a minute); failures are reported, never raised.

Writes ``<out>/<card-slug>-<YYYY-MM-DD>.json`` and ``.md`` (``-tiny`` before the suffix at tiny
size); the card is ``torch.cuda.get_device_name()`` or "cpu".
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clip2video.engine.evaluate import Embeddings, encode_texts, evaluate_embeddings
from clip2video.models import create_model
from clip2video.models.backbone import build_clip

REFERENCE_FPS = 21_400.0  # official fp16 ViT-B/32 encoder, H200, batch 768
TARGET_RATIO = 1.5
TARGET_EVAL_S = 5.0
# Dense bf16 peaks from NVIDIA's datasheets (TFLOP/s), matched on the device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0}

# The smoke suite's tiny backbone (benchmarks/suites/smoke.toml, [backbone.config]).
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


@dataclass(frozen=True)
class Size:
    """Everything that differs between the full-size (GPU) and the tiny (CI) check."""

    name: str
    clip: str | dict[str, Any]
    temporal_layers: int
    batch: int  # frames per encoder call (phase a)
    videos: int
    frames: int
    captions: int
    tokens: int  # caption length, SOT and EOT included
    video_batch: int  # videos per encode_video call
    text_batch: int
    warmup: int  # encoder warm-up calls (excluded)
    min_iters: int  # timed encoder calls, at least
    min_seconds: float  # ... and at least this long
    eval_repeats: int  # timed MSVD passes per precision (after one warm-up pass)
    compile_min_s: float  # skip torch.compile with less budget than this


FULL = Size("full", "ViT-B-32", 4, 768, 670, 12, 27_763, 32, 64, 2048, 3, 10, 3.0, 2, 45.0)
TINY = Size("tiny", TINY_CLIP, 1, 16, 6, 12, 20, 32, 4, 8, 1, 3, 0.2, 2, 5.0)
SIZES = {"full": FULL, "tiny": TINY}

_START = time.perf_counter()


def log(message: str) -> None:
    """One progress line, flushed at once (the script's output is read while it runs)."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {message}", flush=True)


# ------------------------------------------------------------------------------------ helpers


class Budget:
    """Wall-clock budget of the whole run; phases ask it before starting work."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.deadline = time.perf_counter() + self.seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def allows(self, need_s: float) -> bool:
        return self.left() >= need_s


def caption_counts(num_videos: int, num_captions: int, seed: int = 0) -> np.ndarray:
    """Captions per video: every video gets at least one, uneven like MSVD, summing exactly.

    One caption each, then the remaining ``num_captions - num_videos`` spread by a multinomial
    draw over Dirichlet(4) weights (a spread of a few times the mean, as MSVD's 40 +- 20).
    """
    if num_videos < 1 or num_captions < num_videos:
        raise ValueError(
            f"caption_counts: need num_videos >= 1 and num_captions >= num_videos (one caption per "
            f"video at least), got {num_videos} videos and {num_captions} captions"
        )
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(num_videos, 4.0))
    return 1 + rng.multinomial(num_captions - num_videos, weights)


def random_captions(
    num_captions: int, tokens: int, vocab_size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[N, tokens]`` as CLIP writes them: SOT, 1..tokens-2 words, EOT (the largest id), zeros.

    The mask marks SOT..EOT. Word ids avoid 0 (padding), SOT and EOT, so ``argmax`` finds EOT.
    """
    if tokens < 3:
        raise ValueError(f"random_captions: a caption needs >= 3 tokens (SOT, a word, EOT), got {tokens}")
    rng = np.random.default_rng(seed)
    sot, eot = vocab_size - 2, vocab_size - 1
    words = rng.integers(1, tokens - 1, size=num_captions)  # 1 .. tokens-2 words
    ids = rng.integers(1, sot, size=(num_captions, tokens))
    position = np.arange(tokens)[None, :]
    ids[:, 0] = sot
    ids = np.where(position == (words + 1)[:, None], eot, ids)
    real = position <= (words + 1)[:, None]
    ids = np.where(real, ids, 0)
    return torch.from_numpy(ids).long(), torch.from_numpy(real.astype(np.int64))


def card_name(device: torch.device) -> str:
    """The accelerator's name, or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def peak_tflops(card: str) -> float | None:
    """The card's dense bf16 peak if it is one of the known Hopper cards."""
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in card), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def precision(device: torch.device, name: str) -> Iterator[None]:
    """``bf16``: bf16 autocast on the device (CUDA or CPU); ``float32``: plain float32 (no TF32)."""
    if name == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        with tf32(False):
            yield


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls (and cuDNN convolutions) on or off, restored afterwards."""
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def time_calls(
    fn: Callable[[], Any],
    device: torch.device,
    *,
    warmup: int,
    min_iters: int,
    min_seconds: float,
    max_seconds: float,
) -> list[float]:
    """Seconds of each timed call of ``fn`` (synchronised), after ``warmup`` untimed calls.

    Calls continue until both ``min_iters`` calls and ``min_seconds`` have passed, and stop at
    ``max_seconds`` (after one call at least).
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= min_iters and elapsed >= min_seconds) or elapsed >= max_seconds:
            return times


def flops_per_frame(visual: torch.nn.Module, image_size: int, device: torch.device) -> float:
    """FLOPs of one frame through the image encoder, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(2, 3, image_size, image_size, device=device, dtype=next(visual.parameters()).dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        visual(x)
    return counter.get_total_flops() / 2


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# ------------------------------------------------------------------------- phase a: encoder


def encoder_variant(
    name: str, run: Callable[[], torch.Tensor], frames: int, device: torch.device, size: Size, flops: float
) -> dict[str, Any]:
    """Time one encoder variant; frames/s from the median call (and the best call)."""
    times = time_calls(
        run,
        device,
        warmup=size.warmup,
        min_iters=size.min_iters,
        min_seconds=size.min_seconds,
        max_seconds=20.0,
    )
    median, best = float(np.median(times)), float(min(times))
    fps = frames / median
    return {
        "name": name,
        "status": "ok",
        "iters": len(times),
        "median_s": median,
        "best_s": best,
        "frames_per_s": fps,
        "frames_per_s_best": frames / best,
        "ratio_to_reference": fps / REFERENCE_FPS,
        "tflops": fps * flops / 1e12,
    }


def phase_encoder(model: torch.nn.Module, size: Size, device: torch.device, budget: Budget) -> dict[str, Any]:
    """Image-encoder throughput in float32, TF32, bf16 autocast and bf16 weights."""
    visual = model.clip.visual
    image_size = int(visual.image_size[0])
    gen = torch.Generator(device=device).manual_seed(0)
    frames = torch.randn(size.batch, 3, image_size, image_size, generator=gen, device=device)
    flops = flops_per_frame(visual, image_size, device)
    visual_bf16 = copy.deepcopy(visual).to(torch.bfloat16).eval()

    def eager(
        ctx: Callable[[], contextlib.AbstractContextManager], module: torch.nn.Module, dtype: torch.dtype
    ):
        def run() -> torch.Tensor:
            with torch.inference_mode(), ctx():
                return module(frames.to(dtype))

        return run

    variants = [
        ("float32", eager(lambda: tf32(False), visual, torch.float32)),
        ("float32+tf32", eager(lambda: tf32(True), visual, torch.float32)),
        ("bf16 autocast", eager(lambda: precision(device, "bf16"), visual, torch.float32)),
        ("bf16 weights", eager(contextlib.nullcontext, visual_bf16, torch.bfloat16)),
    ]
    reference = variants[0][1]().float()
    rows: list[dict[str, Any]] = []
    per_variant_s = 6.0 if size.name == "full" else 1.0
    for name, run in variants:
        if not budget.allows(per_variant_s):
            rows.append({"name": name, "status": f"skipped: {budget.left():.0f} s of budget left"})
            log(f"encoder {name}: skipped (budget)")
            continue
        try:
            row = encoder_variant(name, run, size.batch, device, size, flops)
            row["max_abs_diff_vs_float32"] = float((run().float() - reference).abs().max())
        except Exception as exc:  # a variant that fails is reported, the others still run
            row = {"name": name, "status": f"failed: {_error_text(exc)}"}
        rows.append(row)
        if row["status"] == "ok":
            log(
                f"encoder {name}: {row['frames_per_s']:,.0f} frames/s "
                f"({row['ratio_to_reference']:.2f}x of {REFERENCE_FPS:,.0f}), {row['tflops']:.1f} TFLOP/s"
            )
        else:
            log(f"encoder {name}: {row['status']}")
    return {
        "batch": size.batch,
        "image_size": image_size,
        "flops_per_frame": flops,
        "reference_frames_per_s": REFERENCE_FPS,
        "target_frames_per_s": REFERENCE_FPS * TARGET_RATIO,
        "variants": rows,
        "notes": [
            "frames/s = batch / median call time (warm-up calls excluded, synchronised per call)",
            "channels_last not tried: the only convolution is the stride-32 patch embedding, <2% of "
            "the FLOPs",
            "bf16 weights run without autocast, so nn.MultiheadAttention can take its fused "
            "inference path (SDPA kernels)",
        ],
    }


# ---------------------------------------------------------------------------- phase d: compile


def compile_child(size: Size, device: torch.device, batch: int, mode: str) -> dict[str, Any]:
    """In the child process: compile the bf16 image encoder, time it, compare with eager bf16."""
    torch.manual_seed(0)
    visual = build_clip(size.clip)[0].visual.to(device=device, dtype=torch.bfloat16).eval()
    image_size = int(visual.image_size[0])
    gen = torch.Generator(device=device).manual_seed(0)
    frames = torch.randn(batch, 3, image_size, image_size, generator=gen, device=device).to(torch.bfloat16)
    compiled = torch.compile(visual, mode=None if mode == "default" else mode)
    with torch.inference_mode():
        eager_out = visual(frames).float()
        start = time.perf_counter()
        out = compiled(frames)
        sync(device)
        compile_s = time.perf_counter() - start
        max_diff = float((out.float() - eager_out).abs().max())

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return compiled(frames)

    flops = flops_per_frame(visual, image_size, device)
    row = encoder_variant("bf16 weights + torch.compile", run, batch, device, size, flops)
    row.update({"mode": mode, "compile_s": compile_s, "max_abs_diff_vs_eager_bf16": max_diff})
    return row


def phase_compile(
    args: argparse.Namespace, size: Size, device: torch.device, budget: Budget
) -> dict[str, Any]:
    """Run ``compile_child`` in a subprocess (its own session) killed at the time cap."""
    name = "bf16 weights + torch.compile"
    if args.compile == "off" or (args.compile == "auto" and device.type != "cuda"):
        why = (
            "--compile off"
            if args.compile == "off"
            else "--compile auto skips it off CUDA (pass --compile on)"
        )
        return {"name": name, "status": f"skipped: {why}"}
    cap = min(args.compile_cap_s, budget.left() - 5.0)
    if cap < size.compile_min_s:
        return {"name": name, "status": f"skipped: {budget.left():.0f} s of budget left"}
    command = [sys.executable, str(Path(__file__).resolve()), "--_compile-child", "--size", size.name]
    command += ["--device", str(device), "--batch", str(size.batch), "--compile-mode", args.compile_mode]
    log(f"torch.compile ({args.compile_mode}) in a subprocess, capped at {cap:.0f} s")
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = child.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the child and its compile workers
        child.communicate()
        return {"name": name, "status": f"timeout: still compiling or timing after {cap:.0f} s (cap)"}
    if child.returncode != 0:
        last = [line for line in err.strip().splitlines() if line.strip()][-1:] or ["no stderr"]
        return {"name": name, "status": f"failed (exit {child.returncode}): {last[0][:300]}"}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        return {"name": name, "status": f"failed: unreadable child output ({_error_text(exc)})"}


# ------------------------------------------------------------------------- phase b: MSVD eval


@dataclass
class EvalInputs:
    frames: torch.Tensor  # [M, F, 3, S, S] float32 on the device
    video_mask: torch.Tensor  # [M, F]
    ids: torch.Tensor  # [N, L] on the device
    text_mask: torch.Tensor
    caption_video: np.ndarray  # [N]


def eval_inputs(model: torch.nn.Module, size: Size, device: torch.device, seed: int = 0) -> EvalInputs:
    """Random frames (generated on the device) and random captions at ``size``."""
    clip = model.clip
    image_size = int(clip.visual.image_size[0])
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (size.videos, size.frames, 3, image_size, image_size)
    frames = torch.randn(shape, generator=gen, device=device)
    video_mask = torch.ones(size.videos, size.frames, dtype=torch.long, device=device)
    counts = caption_counts(size.videos, size.captions, seed)
    tokens = min(size.tokens, int(clip.context_length))
    ids, text_mask = random_captions(size.captions, tokens, int(clip.vocab_size), seed)
    return EvalInputs(
        frames, video_mask, ids.to(device), text_mask.to(device), np.repeat(np.arange(size.videos), counts)
    )


def encode_once(
    model: torch.nn.Module, inputs: EvalInputs, size: Size, device: torch.device, name: str
) -> tuple[dict[str, float], Any, Embeddings]:
    """One encode-once evaluation: each video and caption encoded once, then similarity + ranks."""
    m = inputs.frames.shape[0]
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), precision(device, name):
        parts = [
            model.encode_video(
                inputs.frames[a : a + size.video_batch], inputs.video_mask[a : a + size.video_batch]
            )
            for a in range(0, m, size.video_batch)
        ]
        video = torch.cat([p.float() for p in parts])
    sync(device)
    t1 = time.perf_counter()
    with precision(device, name):
        text = encode_texts(
            model, inputs.ids, inputs.text_mask, batch_size=size.text_batch, device=device, progress=False
        )
    sync(device)
    t2 = time.perf_counter()
    emb = Embeddings(
        text=text, video=video, caption_video=inputs.caption_video, video_ids=[f"v{i}" for i in range(m)]
    )
    result = evaluate_embeddings(model, emb, keep_sim=True)  # similarity in float32, ranks on the device
    sync(device)
    t3 = time.perf_counter()
    timings = {
        "encode_videos_s": t1 - t0,
        "encode_texts_s": t2 - t1,
        "similarity_and_ranks_s": t3 - t2,
        "total_s": t3 - t0,
    }
    return timings, result, emb


def phase_msvd(
    model: torch.nn.Module, size: Size, device: torch.device, budget: Budget
) -> tuple[dict[str, Any], dict[str, tuple[Any, Embeddings]]]:
    """Encode-once evaluation at MSVD size in bf16 autocast and float32; returns the report and
    each precision's last (result, embeddings) for the parity phase."""
    inputs = eval_inputs(model, size, device)
    counts = np.bincount(inputs.caption_video, minlength=size.videos)
    report: dict[str, Any] = {
        "videos": size.videos,
        "frames_per_video": size.frames,
        "captions": size.captions,
        "tokens_per_caption": int(inputs.ids.shape[1]),
        "captions_per_video": {
            "min": int(counts.min()),
            "max": int(counts.max()),
            "mean": float(counts.mean()),
        },
        "target_s": TARGET_EVAL_S,
        "runs": [],
    }
    kept: dict[str, tuple[Any, Embeddings]] = {}
    for name in ("bf16", "float32"):
        row: dict[str, Any] = {"precision": name}
        try:
            warm_s = time.perf_counter()
            encode_once(model, inputs, size, device, name)  # warm-up pass (kernels, allocator)
            warm_s = time.perf_counter() - warm_s
            passes = []
            for _ in range(size.eval_repeats):
                if passes and not budget.allows(2 * warm_s + 10):
                    break
                timings, result, emb = encode_once(model, inputs, size, device, name)
                passes.append(timings)
            best = min(passes, key=lambda t: t["total_s"])
            row.update(
                status="ok",
                warmup_s=warm_s,
                passes=len(passes),
                total_s=best["total_s"],
                median_total_s=float(np.median([t["total_s"] for t in passes])),
                best_pass=best,
                t2v_R1=result.metrics["t2v_R1"],
            )
            kept[name] = (result, emb)
            log(
                f"msvd {name}: {best['total_s']:.2f} s (videos {best['encode_videos_s']:.2f}, captions "
                f"{best['encode_texts_s']:.2f}, similarity+ranks {best['similarity_and_ranks_s']:.2f})"
            )
        except Exception as exc:
            row["status"] = f"failed: {_error_text(exc)}"
            log(f"msvd {name}: {row['status']}")
        report["runs"].append(row)
        if name == "bf16" and not budget.allows(3 * row.get("warmup_s", 0.0) + 15):
            report["runs"].append({"precision": "float32", "status": f"skipped: {budget.left():.0f} s left"})
            break
    del inputs
    return report, kept


# --------------------------------------------------------------------------- phase c: parity


def phase_parity(kept: dict[str, tuple[Any, Embeddings]]) -> dict[str, Any]:
    """bf16 vs float32 on the same inputs: similarity and embedding differences, both metric dicts."""
    if "bf16" not in kept or "float32" not in kept:
        return {"status": f"skipped: needs both MSVD runs, have {sorted(kept)}"}
    (res16, emb16), (res32, emb32) = kept["bf16"], kept["float32"]
    diff = (res16.sim.float() - res32.sim.float()).abs()
    scale = float(res32.sim.abs().max())
    keys = [k for k in res32.metrics if not k.endswith("_ties")]
    return {
        "status": "ok",
        "sim_max_abs_diff": float(diff.max()),
        "sim_mean_abs_diff": float(diff.mean()),
        "sim_max_abs_fp32": scale,
        "sim_max_rel_diff": float(diff.max()) / scale if scale > 0 else math.inf,
        "text_emb_max_abs_diff": float((emb16.text - emb32.text).abs().max()),
        "video_emb_max_abs_diff": float((emb16.video - emb32.video).abs().max()),
        "t2v_same_rank_fraction": float(np.mean(res16.ranks.t2v == res32.ranks.t2v)),
        "v2t_same_rank_fraction": float(np.mean(res16.ranks.v2t == res32.ranks.v2t)),
        "metrics_bf16": res16.metrics,
        "metrics_float32": res32.metrics,
        "metric_diff": {k: res16.metrics[k] - res32.metrics[k] for k in keys},
    }


# --------------------------------------------------------------------------------- reporting


def _met(value: float | None, ok: Callable[[float], bool], counts: bool) -> str:
    if value is None:
        return "not run"
    if not counts:
        return "n/a (tiny size)"
    return "yes" if ok(value) else "NO"


def summary_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The short table: what, value, target, met."""
    counts = report["size"] == "full" and report["device_type"] == "cuda"
    rows: list[dict[str, str]] = []
    target_fps = REFERENCE_FPS * TARGET_RATIO
    encoder = report["phases"].get("encoder", {})
    variants = list(encoder.get("variants", [])) + [report["phases"].get("compile", {})]
    for v in variants:
        if not v:
            continue
        if v.get("status") == "ok":
            value = f"{v['frames_per_s']:,.0f} frames/s ({v['ratio_to_reference']:.2f}x)"
            met = _met(v["frames_per_s"], lambda x: x >= target_fps, counts)
        else:
            value, met = v.get("status", "not run"), "not run"
        rows.append(
            {
                "what": f"encoder {v.get('name', 'torch.compile')}",
                "value": value,
                "target": f">= {target_fps:,.0f} (1.5x)",
                "met": met,
            }
        )
    for run in report["phases"].get("msvd", {}).get("runs", []):
        ok = run.get("status") == "ok"
        rows.append(
            {
                "what": f"MSVD-size eval {run['precision']}",
                "value": f"{run['total_s']:.2f} s" if ok else run.get("status", "not run"),
                "target": f"<= {TARGET_EVAL_S:g} s",
                "met": _met(run["total_s"] if ok else None, lambda x: x <= TARGET_EVAL_S, counts),
            }
        )
    parity = report["phases"].get("parity", {})
    if parity.get("status") == "ok":
        rows.append(
            {
                "what": "parity bf16 vs fp32: sim max abs diff",
                "value": f"{parity['sim_max_abs_diff']:.3g} (rel {parity['sim_max_rel_diff']:.2g})",
                "target": "stated",
                "met": "n/a",
            }
        )
        m16, m32 = parity["metrics_bf16"], parity["metrics_float32"]
        rows.append(
            {
                "what": "parity t2v R@1 / v2t R@1 (bf16 vs fp32)",
                "value": f"{m16['t2v_R1']:.2f}/{m16['v2t_R1']:.2f} vs {m32['t2v_R1']:.2f}/{m32['v2t_R1']:.2f}",
                "target": "stated",
                "met": "n/a",
            }
        )
    elif parity:
        rows.append(
            {"what": "parity bf16 vs fp32", "value": parity["status"], "target": "stated", "met": "n/a"}
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=".5g") if rows else "(no rows)"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: summary table first, then each phase's details."""
    lines = [
        f"# GPU check: {report['card']} ({report['date']}, size {report['size']})",
        "",
        f"Command: `{report['command']}`  ",
        f"torch {report['environment']['torch']}, total {report['total_s']:.1f} s of a "
        f"{report['time_budget_s']:.0f} s budget. Random weights, generated inputs: model-side time only.",
        "",
        table(report["summary"]),
        "",
    ]
    encoder = report["phases"].get("encoder")
    if encoder:
        cols = [
            "name",
            "status",
            "frames_per_s",
            "frames_per_s_best",
            "ratio_to_reference",
            "tflops",
            "median_s",
        ]
        rows = [
            {k: v.get(k, "") for k in cols}
            for v in encoder["variants"] + [report["phases"].get("compile", {})]
        ]
        lines += [
            "## Encoder",
            "",
            f"Batch {encoder['batch']}, {encoder['image_size']} px, "
            f"{encoder['flops_per_frame'] / 1e9:.2f} GFLOP/frame.",
            "",
            table(rows),
            "",
        ]
        lines += [f"- {note}" for note in encoder["notes"]] + [""]
    msvd = report["phases"].get("msvd")
    if msvd:
        rows = [
            {"precision": r["precision"], "status": r["status"], **r.get("best_pass", {})}
            for r in msvd["runs"]
        ]
        per_video = ", ".join(f"{k} {v:.4g}" for k, v in msvd["captions_per_video"].items())
        lines += [
            "## MSVD-size encode-once evaluation",
            "",
            f"{msvd['videos']} videos x {msvd['frames_per_video']} "
            f"frames, {msvd['captions']} captions (per video: {per_video}).",
            "",
            table(rows),
            "",
        ]
    parity = report["phases"].get("parity")
    if parity and parity.get("status") == "ok":
        rows = [
            {"metric": k, "bf16": parity["metrics_bf16"][k], "float32": parity["metrics_float32"][k]}
            for k in parity["metrics_float32"]
        ]
        scalars = {k: v for k, v in parity.items() if not isinstance(v, dict)}
        lines += ["## Parity (bf16 vs float32, same inputs)", "", table([scalars]), "", table(rows), ""]
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            cuda=torch.version.cuda,
            gpu_memory_gib=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
            flash_sdp=torch.backends.cuda.flash_sdp_enabled(),
            mem_efficient_sdp=torch.backends.cuda.mem_efficient_sdp_enabled(),
        )
    return env


def output_paths(out: Path, card: str, size: str, date: str) -> tuple[Path, Path]:
    stem = f"{slug(card)}-{date}" + ("" if size == "full" else f"-{size}")
    return out / f"{stem}.json", out / f"{stem}.md"


# -------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available, else cpu)")
    parser.add_argument("--out", type=Path, default=Path("results/gpu"))
    parser.add_argument("--time-budget-s", type=float, default=270.0, help="wall-clock budget of all phases")
    parser.add_argument("--batch", type=int, default=None, help="encoder batch (default: 768 full, 16 tiny)")
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="torch.compile phase (auto: CUDA only)",
    )
    parser.add_argument(
        "--compile-mode", default="max-autotune-no-cudagraphs", help="torch.compile mode, or 'default'"
    )
    parser.add_argument(
        "--compile-cap-s", type=float, default=150.0, help="kill the compile subprocess after this"
    )
    parser.add_argument("--_compile-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    size = SIZES[args.size]
    if args.batch:
        size = Size(**{**asdict(size), "batch": args.batch})
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device: pass --device cpu")
    if args._compile_child:
        print(json.dumps(compile_child(size, device, size.batch, args.compile_mode)), flush=True)
        return {}

    started = time.perf_counter()
    budget = Budget(args.time_budget_s)
    card = card_name(device)
    log(f"GPU check, size {size.name}, device {device} ({card}), budget {budget.seconds:.0f} s")
    torch.manual_seed(0)
    model = create_model(
        "clip2video", clip=size.clip, clip_weights=None, temporal_layers=size.temporal_layers
    )
    model = model.to(device).eval()
    log("model built")
    report: dict[str, Any] = {
        "check": "gpu",
        "card": card,
        "device_type": device.type,
        "size": size.name,
        "date": dt.date.today().isoformat(),
        "time_budget_s": budget.seconds,
        "command": shlex.join(
            ["python", "benchmarks/gpu/check.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "environment": environment(device),
        "settings": asdict(size),
        "reference_frames_per_s": REFERENCE_FPS,
        "bf16_peak_tflops": peak_tflops(card),
        "phases": {},
        "phase_seconds": {},
    }
    phases: list[tuple[str, Callable[[], Any]]] = [
        ("encoder", lambda: phase_encoder(model, size, device, budget)),
        ("msvd", lambda: phase_msvd(model, size, device, budget)),
        ("parity", lambda: phase_parity(kept)),
        ("compile", lambda: phase_compile(args, size, device, budget)),
    ]
    kept: dict[str, tuple[Any, Embeddings]] = {}
    for name, run in phases:
        start = time.perf_counter()
        log(f"phase {name} ({budget.left():.0f} s of budget left)")
        try:
            result = run()
        except Exception as exc:
            result = {"status": f"failed: {_error_text(exc)}"}
        if name == "msvd" and isinstance(result, tuple):
            result, kept = result
        report["phases"][name] = result
        report["phase_seconds"][name] = time.perf_counter() - start
        if name == "msvd" and device.type == "cuda":
            torch.cuda.empty_cache()  # free the MSVD frames before the compile child starts
    report["total_s"] = time.perf_counter() - started
    report["summary"] = summary_rows(report)

    json_path, md_path = output_paths(args.out, card, size.name, report["date"])
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    md_path.write_text(markdown(report) + "\n")
    log(f"wrote {json_path} and {md_path}")
    print("\n" + table(report["summary"]), flush=True)
    return report


if __name__ == "__main__":
    main()

"""benchmarks/gpu/check.py at its tiny size on the CPU: every phase runs, the report is complete,
the table comes last; its helpers and its encode-once evaluation checked against brute force."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.gpu import check
from clip2video.metrics import METRIC_KEYS
from clip2video.models import create_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, str, Path]:
    """One tiny CPU run as a script: (JSON report, stdout, out dir)."""
    out = tmp_path_factory.mktemp("gpu")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu.check",
            "--size",
            "tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    files = sorted(out.glob("*.json"))
    assert [f.name for f in files] == [f"cpu-{json.loads(files[0].read_text())['date']}-tiny.json"]
    return json.loads(files[0].read_text()), done.stdout, out


# ---------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(("videos", "captions"), [(670, 27_763), (6, 20), (5, 5), (1, 7), (300, 301)])
def test_caption_counts_sum_exactly_and_give_every_video_one(videos: int, captions: int) -> None:
    counts = check.caption_counts(videos, captions, seed=3)
    assert counts.shape == (videos,)
    assert int(counts.sum()) == captions
    assert int(counts.min()) >= 1
    assert np.array_equal(counts, check.caption_counts(videos, captions, seed=3))


def test_caption_counts_are_uneven_at_msvd_size() -> None:
    counts = check.caption_counts(670, 27_763)
    assert counts.max() > 1.5 * counts.mean() > counts.min() * 2  # not all equal: MSVD is uneven


@pytest.mark.parametrize(("videos", "captions"), [(0, 5), (5, 4)])
def test_caption_counts_reject_impossible_sizes(videos: int, captions: int) -> None:
    with pytest.raises(ValueError, match="num_captions >= num_videos"):
        check.caption_counts(videos, captions)


def test_random_captions_follow_clip_token_layout() -> None:
    vocab, tokens = 100, 12
    ids, mask = check.random_captions(200, tokens, vocab, seed=1)
    assert ids.shape == mask.shape == (200, tokens) and ids.dtype == torch.long
    lengths = mask.sum(1)
    for row, n in zip(ids.tolist(), lengths.tolist(), strict=True):
        assert 3 <= n <= tokens
        assert row[0] == vocab - 2  # SOT
        assert row[n - 1] == vocab - 1  # EOT closes the caption ...
        assert row.index(max(row)) == n - 1  # ... and is the argmax the model pools at
        assert all(0 < t < vocab - 2 for t in row[1 : n - 1])  # words
        assert all(t == 0 for t in row[n:])  # padding
        assert mask[0].tolist() == sorted(mask[0].tolist(), reverse=True)  # mask is a prefix
    assert len(set(lengths.tolist())) > 5  # caption lengths vary


def test_slug_and_output_paths(tmp_path: Path) -> None:
    assert check.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert check.slug("cpu") == "cpu"
    assert check.output_paths(tmp_path, "NVIDIA H200", "full", "2026-01-02") == (
        tmp_path / "nvidia-h200-2026-01-02.json",
        tmp_path / "nvidia-h200-2026-01-02.md",
    )
    assert check.output_paths(tmp_path, "cpu", "tiny", "2026-01-02")[0].name == "cpu-2026-01-02-tiny.json"


def test_time_calls_counts_warmup_apart_and_honours_minimums() -> None:
    calls = []
    times = check.time_calls(
        lambda: calls.append(1), torch.device("cpu"), warmup=2, min_iters=5, min_seconds=0.0, max_seconds=9
    )
    assert len(times) == 5 and len(calls) == 7 and all(t >= 0 for t in times)


def test_budget_refuses_work_past_the_deadline() -> None:
    assert check.Budget(100).allows(50)
    assert not check.Budget(1).allows(50)


# ------------------------------------------------------------------- the tiny run, end to end


def test_tiny_run_has_every_phase_with_positive_timings(tiny_run) -> None:
    report, _, _ = tiny_run
    assert report["size"] == "tiny" and report["device_type"] == "cpu" and report["card"] == "cpu"
    assert set(report["phases"]) == {"encoder", "msvd", "parity", "compile"}
    assert all(report["phase_seconds"][p] > 0 for p in report["phases"])
    variants = report["phases"]["encoder"]["variants"]
    assert [v["name"] for v in variants] == ["float32", "float32+tf32", "bf16 autocast", "bf16 weights"]
    for v in variants:
        assert v["status"] == "ok", v
        assert v["median_s"] > 0 and v["best_s"] <= v["median_s"]
        assert v["frames_per_s"] == pytest.approx(report["settings"]["batch"] / v["median_s"])
        assert v["ratio_to_reference"] == pytest.approx(v["frames_per_s"] / 21_400)
    assert variants[1]["max_abs_diff_vs_float32"] < 1e-4  # TF32 is off on the CPU anyway
    assert 0 < variants[2]["max_abs_diff_vs_float32"] < 0.2  # bf16 differs, a little
    runs = report["phases"]["msvd"]["runs"]
    assert [r["precision"] for r in runs] == ["bf16", "float32"]
    for r in runs:
        assert r["status"] == "ok"
        parts = r["best_pass"]
        assert all(parts[k] > 0 for k in ("encode_videos_s", "encode_texts_s", "similarity_and_ranks_s"))
        assert parts["total_s"] == pytest.approx(
            parts["encode_videos_s"] + parts["encode_texts_s"] + parts["similarity_and_ranks_s"], rel=0.05
        )
    assert report["phases"]["compile"]["status"].startswith("skipped: --compile auto")


def test_tiny_run_parity_is_finite_with_both_metric_dicts(tiny_run) -> None:
    parity = tiny_run[0]["phases"]["parity"]
    assert parity["status"] == "ok"
    for key in ("sim_max_abs_diff", "sim_mean_abs_diff", "sim_max_rel_diff", "text_emb_max_abs_diff"):
        assert math.isfinite(parity[key]) and parity[key] >= 0
    assert parity["sim_max_abs_diff"] > 0  # bf16 is not float32
    assert parity["sim_mean_abs_diff"] <= parity["sim_max_abs_diff"]
    assert parity["sim_max_rel_diff"] == pytest.approx(
        parity["sim_max_abs_diff"] / parity["sim_max_abs_fp32"]
    )
    assert set(parity["metrics_bf16"]) == set(parity["metrics_float32"]) == set(METRIC_KEYS)
    for key, diff in parity["metric_diff"].items():
        assert diff == pytest.approx(parity["metrics_bf16"][key] - parity["metrics_float32"][key])


def test_tiny_run_prints_the_table_last_and_writes_markdown(tiny_run) -> None:
    report, stdout, out = tiny_run
    lines = [line for line in stdout.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.startswith("| what"))
    assert all(line.startswith("|") for line in lines[header:])  # nothing after the table
    assert len(lines) - header == 2 + len(report["summary"])  # header, rule, one line per row
    assert any("wrote" in line for line in lines[:header])
    whats = [row["what"] for row in report["summary"]]
    assert "MSVD-size eval bf16" in whats and "encoder bf16 weights" in whats
    assert all(row["met"] in ("n/a (tiny size)", "not run", "n/a") for row in report["summary"])
    md = (out / f"cpu-{report['date']}-tiny.md").read_text()
    assert md.index("| what") < md.index("## Encoder") < md.index("## Parity")


def test_zero_budget_skips_every_phase_but_still_reports(tmp_path: Path, capsys) -> None:
    report = check.main(["--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--time-budget-s", "0"])
    statuses = [v["status"] for v in report["phases"]["encoder"]["variants"]]
    assert statuses and all(s.startswith("skipped") for s in statuses)
    assert report["phases"]["compile"]["status"].startswith("skipped")
    assert (tmp_path / f"cpu-{report['date']}-tiny.json").exists()
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("|")


# ------------------------------------------------- encode-once evaluation against brute force


def test_encode_once_matches_per_video_encoding_and_hand_ranks() -> None:
    torch.manual_seed(0)
    model = create_model("clip2video", clip=check.TINY_CLIP, temporal_layers=1).eval()
    cpu = torch.device("cpu")
    inputs = check.eval_inputs(model, check.TINY, cpu)
    timings, result, emb = check.encode_once(model, inputs, check.TINY, cpu, "float32")
    assert timings["total_s"] > 0
    with torch.no_grad():
        videos = torch.cat(
            [model.encode_video(inputs.frames[i : i + 1], inputs.video_mask[i : i + 1]) for i in range(6)]
        )
        texts = torch.cat(
            [model.encode_text(inputs.ids[i : i + 1], inputs.text_mask[i : i + 1]) for i in range(20)]
        )
        sim = model.similarity(texts, videos).numpy()
    torch.testing.assert_close(emb.video, videos, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.text, texts, atol=1e-5, rtol=1e-5)
    gt = inputs.caption_video
    own = sim[np.arange(len(gt)), gt]
    ranks = 1 + (sim > own[:, None]).sum(1)  # no ties in random float scores
    assert result.metrics["t2v_R1"] == pytest.approx(100 * np.mean(ranks == 1))
    assert result.metrics["t2v_R5"] == pytest.approx(100 * np.mean(ranks <= 5))
    assert result.metrics["t2v_MnR"] == pytest.approx(ranks.mean())


def test_summary_met_logic_counts_only_full_size_on_cuda() -> None:
    def report(size: str, device: str, fps: float, seconds: float) -> dict:
        variant = {
            "name": "bf16 weights",
            "status": "ok",
            "frames_per_s": fps,
            "ratio_to_reference": fps / 21_400,
        }
        return {
            "size": size,
            "device_type": device,
            "phases": {
                "encoder": {"variants": [variant]},
                "msvd": {"runs": [{"precision": "bf16", "status": "ok", "total_s": seconds}]},
            },
        }

    met = {r["what"]: r["met"] for r in check.summary_rows(report("full", "cuda", 40_000, 4.0))}
    assert met == {"encoder bf16 weights": "yes", "MSVD-size eval bf16": "yes"}
    met = {r["what"]: r["met"] for r in check.summary_rows(report("full", "cuda", 32_000, 5.5))}
    assert met == {"encoder bf16 weights": "NO", "MSVD-size eval bf16": "NO"}
    met = {r["what"]: r["met"] for r in check.summary_rows(report("tiny", "cpu", 40_000, 4.0))}
    assert set(met.values()) == {"n/a (tiny size)"}


@pytest.mark.slow
def test_tiny_compile_phase_runs_on_the_cpu(tmp_path: Path) -> None:
    """torch.compile at the tiny size (C++ compilation: ~30 s on 2 cores)."""
    report = check.main(
        [
            "--size",
            "tiny",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--compile",
            "on",
            "--compile-mode",
            "default",
        ]
    )
    row = report["phases"]["compile"]
    assert row["status"] == "ok", row
    assert row["compile_s"] > 0 and row["frames_per_s"] > 0
    assert row["max_abs_diff_vs_eager_bf16"] < 0.1

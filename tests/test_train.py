"""Training loop: exact gradient accumulation, selection, schedule, sampler (the stand-ins are in
``tests/support/train_standins.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clip2video.engine.losses import symmetric_ce
from clip2video.engine.train import GlobalBatchSampler, TrainConfig, compute_gradients, train
from tests.support.train_standins import (
    StandInModel,
    ToyPairs,
    batch_of,
    cfg,
    grads_of,
    recall_at_1,
)

# ---------------------------------------------------------------- gradient accumulation


@pytest.mark.parametrize("tab", [False, True])
def test_grad_accumulation_equals_one_big_batch(tab):
    torch.manual_seed(1)
    model = StandInModel(tab=tab)
    data = ToyPairs(8)
    batch = batch_of(data, [0, 3, 5, 6])
    compute_gradients(model, [batch], device=torch.device("cpu"))
    one = grads_of(model)
    model.zero_grad(set_to_none=True)
    halves = [[b[:2] for b in batch], [b[2:] for b in batch]]
    logs = compute_gradients(model, halves, device=torch.device("cpu"))
    two = grads_of(model)
    assert one.keys() == two.keys() and "clip.logit_scale" in one
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-7, msg=name)
    # the logged loss is the loss over the full batch (all four negatives), computed independently
    with torch.no_grad():
        t, v = model.encode_text(batch[0], batch[1]), model.encode_video(batch[2], batch[3])
        expected = sum(w * symmetric_ce(s) for w, s in model.similarity_parts(t, v))
    assert logs["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_grad_accumulation_replays_dropout_masks():
    """GradCache re-encodes each micro-batch with the RNG state of its first pass: the result is the
    gradient of one graph through the same dropout masks."""
    torch.manual_seed(2)
    model = StandInModel(dropout=0.5).train()
    data = ToyPairs(8)
    batch = batch_of(data, [1, 2, 4, 7])
    micro = [[b[:2] for b in batch], [b[2:] for b in batch]]
    state = torch.get_rng_state()
    compute_gradients(model, micro, device=torch.device("cpu"))
    cached = grads_of(model)
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(state)
    ts, vs = [], []
    for ids, mask, frames, fmask, _ in micro:  # the same RNG consumption order as the first pass
        ts.append(model.encode_text(ids, mask))
        vs.append(model.encode_video(frames, fmask))
    ((_, logits),) = model.similarity_parts(torch.cat(ts), torch.cat(vs))
    symmetric_ce(logits).backward()
    for name, g in grads_of(model).items():
        torch.testing.assert_close(cached[name], g, rtol=1e-5, atol=1e-7, msg=name)


# ---------------------------------------------------------------- sampler


def test_global_batch_sampler_order_and_sharding():
    one = list(GlobalBatchSampler(10, 4, seed=5, epoch=2))
    assert len(one) == 2 and all(len(b) == 4 for b in one)  # 10 // 4 steps; the incomplete batch dropped
    perm = np.random.default_rng([5, 2]).permutation(10)
    assert one == [perm[0:4].tolist(), perm[4:8].tolist()]
    assert one == list(GlobalBatchSampler(10, 4, seed=5, epoch=2))  # pure function of (seed, epoch)
    assert one != list(GlobalBatchSampler(10, 4, seed=5, epoch=3))
    r0 = list(GlobalBatchSampler(10, 4, seed=5, epoch=2, rank=0, world=2, micro_batches=2))
    r1 = list(GlobalBatchSampler(10, 4, seed=5, epoch=2, rank=1, world=2, micro_batches=2))
    assert all(len(b) == 1 for b in r0 + r1)
    for step in range(2):  # rank 0 takes the first half of each global batch, in micro-batches
        assert r0[2 * step] + r0[2 * step + 1] + r1[2 * step] + r1[2 * step + 1] == one[step]
    with pytest.raises(ValueError, match="divisible"):
        GlobalBatchSampler(10, 6, seed=0, epoch=0, world=4)


# ---------------------------------------------------------------- the loop


def test_training_learns_and_logs(tmp_path):
    torch.manual_seed(0)
    model, data = StandInModel(tab=True), ToyPairs(16)
    before = recall_at_1(model, data)["t2v_R1"]
    seen = []

    class Tracker:
        def log_metrics(self, metrics, step):
            seen.append((step, dict(metrics)))

    config = cfg(epochs=6, lr=2e-2, log_every=1)
    result = train(
        model, data, config, out_dir=tmp_path, val_fn=lambda m, e: recall_at_1(m, data), tracker=Tracker()
    )
    assert [r["epoch"] for r in result.history] == list(range(6))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.final_metrics["t2v_R1"] > before
    assert result.best_epoch == 5 and result.selected_on == "final" and not result.selected_on_test
    assert result.checkpoint_path == tmp_path / "last.pt" and result.checkpoint_path.is_file()
    steps = [s for s, m in seen if "train/loss" in m]
    assert steps == list(range(1, 6 * 4 + 1))  # 16 pairs / batch 4 = 4 steps per epoch
    assert any("val/t2v_R1" in m for _, m in seen)


def test_learning_rates_follow_the_schedule(tmp_path):
    model, data = StandInModel(), ToyPairs(16)
    result = train(model, data, cfg(epochs=3, lr=1e-3, coef_lr=1e-3, warmup=0.25), out_dir=tmp_path)
    total = 12  # 3 epochs x 4 steps
    for record in result.history:
        x = record["step"] / total  # the lr the next step would use
        factor = x / 0.25 if x < 0.25 else 0.5 * (1 + math.cos(math.pi * x))
        assert record["lr"] == pytest.approx(1e-3 * factor)
        assert record["lr_clip"] == pytest.approx(1e-6 * factor)


def test_select_on_val_restores_best_epoch(tmp_path):
    model, data = StandInModel(), ToyPairs(8)
    scores = iter([10.0, 90.0, 30.0])
    snapshots = {}

    def val_fn(m, epoch):
        snapshots[epoch] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"t2v_R1": next(scores), "t2v_R5": 1.0}

    result = train(model, data, cfg(epochs=3, select_on="val"), out_dir=tmp_path, val_fn=val_fn)
    assert result.best_epoch == 1 and result.final_metrics["t2v_R1"] == 90.0
    assert not result.selected_on_test and result.checkpoint_path == tmp_path / "best.pt"
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k
    assert not torch.equal(model.state_dict()["temporal.weight"], snapshots[2]["temporal.weight"])


def test_select_on_test_only_when_asked_and_marked(tmp_path):
    data = ToyPairs(8)
    assert TrainConfig().select_on == "final"
    result = train(
        StandInModel(), data, cfg(select_on="test"), out_dir=tmp_path, val_fn=lambda m, e: {"t2v_R1": 5.0 - e}
    )
    assert result.selected_on_test and result.selected_on == "test" and result.best_epoch == 0
    with pytest.raises(ValueError, match="val_fn"):
        train(StandInModel(), data, cfg(select_on="val"), out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="select_on"):
        TrainConfig(select_on="best")


def test_amp_is_float32_on_cpu(tmp_path):
    data = ToyPairs(8)
    runs = []
    for amp in (True, False):
        torch.manual_seed(4)
        model = StandInModel()
        train(model, data, cfg(amp=amp), out_dir=tmp_path / str(amp))
        runs.append(model.state_dict())
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(StandInModel(), ToyPairs(3), cfg(), out_dir=tmp_path)
    with pytest.raises(ValueError, match="divisible"):
        train(StandInModel(), ToyPairs(8), cfg(grad_accum=3), out_dir=tmp_path)


# ---------------------------------------------------------------- every registry model


class TinyClipPairs(torch.utils.data.Dataset):
    """Caption-video pairs shaped for the tiny registry CLIP (32-pixel frames, 12-token captions)."""

    def __init__(self, n: int = 4, frames: int = 4) -> None:
        from tests.support.tiny_clip import tiny_text, tiny_video

        self.ids, self.mask = tiny_text(n, seed=1)
        self.frames, self.fmask = tiny_video(
            n, frames=frames, lengths=[frames - i % 2 for i in range(n)], seed=2
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.ids[i], self.mask[i], self.frames[i], self.fmask[i], i


@pytest.mark.parametrize("name", ["meanp", "seqtransf", "tdb", "tab", "clip2video"])
def test_every_registry_model_trains_with_exact_accumulation(name, tmp_path):
    from clip2video.models import list_models
    from tests.support.tiny_clip import tiny_model

    assert name in list_models()
    model = tiny_model(name).train()
    data = TinyClipPairs(4)
    batch = batch_of(data, [0, 1, 2, 3])
    compute_gradients(model, [batch], device=torch.device("cpu"))
    one = grads_of(model)
    model.zero_grad(set_to_none=True)
    compute_gradients(model, [[b[:2] for b in batch], [b[2:] for b in batch]], device=torch.device("cpu"))
    two = grads_of(model)
    assert "clip.logit_scale" in one and one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
    model.zero_grad(set_to_none=True)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = cfg(epochs=1, batch_size=2, grad_accum=2, lr=1e-3, coef_lr=1e-3)
    result = train(model, data, config, out_dir=tmp_path)
    assert all(math.isfinite(x) for x in result.history[0]["step_losses"])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("clip.visual.") for k in changed) and any(
        k.startswith("clip.transformer.") for k in changed
    )
    new_modules = {k for k in before if not k.startswith("clip.")}
    assert new_modules <= changed or name == "meanp"  # meanp adds no module


@pytest.mark.slow
def test_end_to_end_on_generated_videos_with_engine_validation(tmp_path):
    """PairDataset over real H.264 files, a tiny clip2video, validation by the evaluation engine."""
    from clip2video.data.datasets import PairDataset, VideoDataset
    from clip2video.data.frames import FrameSampler
    from clip2video.data.text import CaptionTokenizer
    from clip2video.engine.evaluate import Embeddings, encode_texts, encode_videos, evaluate_embeddings
    from tests.support.tiny_clip import tiny_clip_config, tiny_model
    from tests.support.videogen import make_video

    paths = [make_video(tmp_path / f"v{i}.mp4", 20 + 10 * i, 5, (32, 32), lossless=False) for i in range(4)]
    captions = ["a red ball", "a blue cube", "two green lines", "one white square"]
    pairs = [(v, f"{captions[v]} {extra}") for v in range(4) for extra in ("moves", "stays")]
    tokenizer = CaptionTokenizer(max_words=12)
    train_set = PairDataset(pairs, paths, FrameSampler(max_frames=4, image_size=32, train=True), tokenizer, 0)
    val_videos = VideoDataset(paths, FrameSampler(max_frames=4, image_size=32))
    val_ids, val_mask = tokenizer(captions)

    def val_fn(model, epoch):
        emb = Embeddings(
            encode_texts(model, val_ids, val_mask, progress=False),
            encode_videos(model, val_videos, progress=False),
            np.arange(4),
            [p.stem for p in paths],
        )
        return evaluate_embeddings(model, emb).metrics

    model = tiny_model(
        "clip2video", clip=tiny_clip_config(vocab_size=tokenizer.vocab_size), temporal_layers=1
    )
    config = cfg(epochs=2, batch_size=4, grad_accum=2, lr=1e-3, select_on="val")
    result = train(model, train_set, config, out_dir=tmp_path / "run", val_fn=val_fn)
    assert [len(r["step_losses"]) for r in result.history] == [2, 2]
    assert all("t2v_R1" in r["val"] and "v2t_MnR" in r["val"] for r in result.history)
    best = max(result.history, key=lambda r: r["val"]["t2v_R1"])  # first best on ties
    assert result.best_epoch == best["epoch"] and not result.selected_on_test

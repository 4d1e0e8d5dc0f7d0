"""Distributed evaluation: shards gathered by sample index give the single-process result."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from clip2video.engine.distributed import assemble_by_index, gather_by_index, shard_indices
from clip2video.engine.evaluate import (
    encode_split,
    encode_video_passes,
    encode_videos_distributed,
    evaluate_embeddings,
)
from tests.support.eval_standins import ToyModel, ToyTokenizer, ToyVideos, toy_split

NUM_VIDEOS = 7  # with 11 captions: divisible by none of 2, 3


@pytest.mark.parametrize("contiguous", [False, True])
def test_shard_indices_partition_without_padding(contiguous):
    for total in (0, 1, 7, 11):
        for world in (1, 2, 3, 4, 8):
            shards = [shard_indices(total, r, world, contiguous=contiguous) for r in range(world)]
            flat = [i for s in shards for i in s]
            assert sorted(flat) == list(range(total)), (total, world)
            assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    with pytest.raises(ValueError, match="rank 3"):
        shard_indices(7, 3, 3)


def test_padded_distributed_sampler_pitfall_is_avoided():
    total, world, width = NUM_VIDEOS, 3, 4
    reference = torch.arange(total * width, dtype=torch.float32).reshape(total, width)
    shards = [
        list(DistributedSampler(range(total), num_replicas=world, rank=r, shuffle=False))
        for r in range(world)
    ]
    flat = [i for s in shards for i in s]
    assert len(flat) == 9 and len(set(flat)) == total, "the padded sampler repeats samples"
    # Gathering by position (concatenate, keep the first `total` rows) scrambles the order and
    # repeats a sample: this is the bug to avoid.
    naive = torch.cat([reference[s] for s in shards])[:total]
    assert not torch.equal(naive, reference)
    assert len({tuple(r.tolist()) for r in naive}) < total, "a video is lost and another duplicated"
    # Gathering by index (padding index -1 included) restores every sample exactly once.
    padded = [torch.tensor(s + [-1]) for s in shards]
    chunks = [torch.cat([reference[s], torch.zeros(1, width)]) for s in shards]
    torch.testing.assert_close(assemble_by_index(chunks, padded, total), reference)
    with pytest.raises(ValueError, match=r"samples \[6\]"):
        assemble_by_index([reference[:6]], [torch.arange(6)], total)


def test_gather_by_index_outside_a_process_group_is_a_scatter():
    emb = torch.tensor([[1.0], [0.0], [2.0]])
    torch.testing.assert_close(gather_by_index(emb, [1, 0, 2], 3), torch.tensor([[0.0], [1.0], [2.0]]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model, data, split = ToyModel(tab=True), ToyVideos(NUM_VIDEOS), toy_split()
        emb = encode_split(
            model,
            split,
            "toy",
            "unused",
            tokenizer=ToyTokenizer(),
            sampler=object(),
            video_dataset=data,
            batch_size=2,
            progress=False,
        )
        first_reads = {str(k): v for k, v in data.reads.items()}
        # the pitfall path: a padded DistributedSampler shard, gathered by index
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False)
        idx, (local,) = encode_video_passes(
            model, torch.utils.data.Subset(data, list(sampler)), progress=False
        )
        padded_gather = gather_by_index(local, idx, NUM_VIDEOS)
        again = encode_videos_distributed(model, data, progress=False)
        record = {
            "reads": first_reads,
            "padded_equal": bool(torch.allclose(padded_gather, emb.video, atol=1e-6)),
        }
        record["again_equal"] = bool(torch.allclose(again, emb.video, atol=1e-6))
        if rank == 0:
            result = evaluate_embeddings(model, emb)
            torch.save({"sim": result.sim, "text": emb.text, "video": emb.video}, f"{out}/w{world}.pt")
            record["metrics"] = result.metrics
        Path(f"{out}/w{world}_r{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # six spawned interpreters: ~40 s on 2 busy cores
def test_one_two_three_processes_give_identical_results(tmp_path):
    for world in (1, 2, 3):
        mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    base = torch.load(tmp_path / "w1.pt")
    base_metrics = json.loads((tmp_path / "w1_r0.json").read_text())["metrics"]
    for world in (2, 3):
        got = torch.load(tmp_path / f"w{world}.pt")
        for key in ("sim", "text", "video"):
            torch.testing.assert_close(got[key], base[key], rtol=0, atol=1e-6, msg=f"{key}, world {world}")
        assert json.loads((tmp_path / f"w{world}_r0.json").read_text())["metrics"] == base_metrics
        records = [json.loads((tmp_path / f"w{world}_r{r}.json").read_text()) for r in range(world)]
        assert all(r["padded_equal"] and r["again_equal"] for r in records)
    # encode_split decoded each video exactly once across the ranks
    for world in (1, 2, 3):
        records = [json.loads((tmp_path / f"w{world}_r{r}.json").read_text()) for r in range(world)]
        reads = [int(k) for rec in records for k, n in rec["reads"].items() for _ in range(n)]
        assert sorted(reads) == list(range(NUM_VIDEOS)), world
    assert np.isfinite(base["sim"].numpy()).all()

"""Two gloo processes on the CPU train exactly like one process with the same global batch."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clip2video.engine.distributed import all_gather_with_grad, init_distributed_from_env, rank_and_world
from clip2video.engine.train import compute_gradients, train
from tests.support.train_standins import StandInModel, ToyPairs, batch_of, cfg, grads_of, recall_at_1

CONFIGS = {"accum1": {"grad_accum": 1}, "accum2": {"grad_accum": 2}}
PAIRS, BATCH = 24, 8  # 3 optimizer steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out_dir: Path, **kw) -> dict:
    torch.manual_seed(0)
    model = StandInModel(tab=True)
    data = ToyPairs(PAIRS)
    result = train(
        model,
        data,
        cfg(epochs=1, batch_size=BATCH, lr=5e-2, **kw),
        out_dir=out_dir,
        val_fn=lambda m, e: recall_at_1(m, data),
    )
    return {
        "losses": result.history[0]["step_losses"],
        "metrics": result.final_metrics,
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _gradients(rank: int, world: int, accum: int) -> dict[str, torch.Tensor]:
    """This rank's gradient after compute_gradients on its slice of global batch 0..BATCH-1."""
    torch.manual_seed(0)
    model = StandInModel(tab=True)
    local = BATCH // world
    indices = list(range(rank * local, (rank + 1) * local))
    micro = local // accum
    batches = [batch_of(ToyPairs(PAIRS), indices[m * micro : (m + 1) * micro]) for m in range(accum)]
    compute_gradients(model, batches, device=torch.device("cpu"))
    return grads_of(model)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    assert init_distributed_from_env() == (rank, world)
    out = Path(out_dir)
    results = {name: _run(out / f"ddp-{name}", **kw) for name, kw in CONFIGS.items()}
    results["grads"] = {accum: _gradients(rank, world, accum) for accum in (1, 2)}
    # all_gather_with_grad: forward is the rank-ordered concatenation, and every rank's slice gets
    # the gradient summed over ranks (here all ranks compute the same loss, hence world x).
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    y = all_gather_with_grad(x)
    weights = torch.arange(2 * world * 3, dtype=torch.float32).view(2 * world, 3)
    (y * weights).sum().backward()
    results["gather"] = {"y": y.detach(), "grad": x.grad, "rank_world": rank_and_world()}
    torch.save(results, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def _spawn(world: int, out_dir: Path, timeout_s: float = 240.0) -> None:
    ctx = mp.start_processes(
        _worker, args=(world, _free_port(), str(out_dir)), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"distributed workers did not finish in {timeout_s} s")


def test_two_processes_match_one(tmp_path):
    _spawn(2, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.set_num_threads(1)
    single = _run(tmp_path / "single")  # one process, accum 1, the same global batch and seed
    assert len(single["losses"]) == PAIRS // BATCH
    for name in CONFIGS:
        for rank, got in enumerate(ranks):
            run = got[name]
            assert run["losses"] == pytest.approx(single["losses"], abs=1e-5), (name, rank)
            assert run["metrics"]["t2v_R1"] == single["metrics"]["t2v_R1"], (name, rank)
            for key, value in single["state"].items():
                torch.testing.assert_close(
                    run["state"][key], value, rtol=1e-5, atol=1e-6, msg=f"{name} {key}"
                )
    # both ranks end with the same weights, bit for bit
    for name in CONFIGS:
        for key in single["state"]:
            assert torch.equal(ranks[0][name]["state"][key], ranks[1][name]["state"][key]), (name, key)
    # the gradient itself (Adam would hide a wrong scale): averaged over ranks, it is the
    # one-process gradient of the whole global batch
    reference = _gradients(0, 1, 1)
    for accum in (1, 2):
        for got in ranks:
            assert got["grads"][accum].keys() == reference.keys()
            for key, value in reference.items():
                torch.testing.assert_close(
                    got["grads"][accum][key], value, rtol=1e-5, atol=1e-7, msg=f"{accum} {key}"
                )
    # only rank 0 wrote checkpoints
    assert (tmp_path / "ddp-accum1" / "last.pt").is_file()

    weights = torch.arange(12, dtype=torch.float32).view(4, 3)
    expected_y = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    for rank, got in enumerate(ranks):
        gather = got["gather"]
        assert tuple(gather["rank_world"]) == (rank, 2)
        assert torch.equal(gather["y"], expected_y)
        assert torch.equal(gather["grad"], 2 * weights[2 * rank : 2 * rank + 2])


def test_outside_torchrun_is_single_process(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert init_distributed_from_env() == (0, 1)
    assert rank_and_world() == (0, 1)
    x = torch.ones(2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torch.distributed.run"):
        init_distributed_from_env()

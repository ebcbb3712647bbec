"""Run a function on 2 CPU ranks (gloo) with torchrun's environment variables, in spawned processes."""

from __future__ import annotations

import os
import socket
import sys
import traceback
from pathlib import Path

import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"}


def _child(fn, rank, world, port, args, queue):
    os.environ.update(rank_env(rank, world, port))
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        try:
            queue.put((rank, "ok", fn(rank, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put((rank, "error", traceback.format_exc()))


PORT_TAKEN = "ddress already in use"


def run_ranks(fn, *args, world: int = 2, timeout: float = 90.0) -> list:
    """fn(rank, *args) on every rank; its return values in rank order (an error in a rank fails)."""
    for _ in range(2):  # the free port can be taken by another process before rank 0 binds it
        try:
            return _run_ranks(fn, args, world, timeout)
        except AssertionError as exc:
            if PORT_TAKEN not in str(exc):
                raise
    return _run_ranks(fn, args, world, timeout)


def _run_ranks(fn, args, world: int, timeout: float) -> list:
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_child, args=(fn, r, world, port, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    try:
        for _ in range(world):
            rank, status, value = queue.get(timeout=timeout)
            if status != "ok":
                raise AssertionError(f"rank {rank} failed:\n{value}")
            results[rank] = value
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(world)]


def cli_env(rank: int, world: int, port: int, **extra: str) -> dict[str, str]:
    env = {**os.environ, **rank_env(rank, world, port), **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


PYTHON = sys.executable

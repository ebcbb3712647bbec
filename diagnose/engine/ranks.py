"""`diagnose` under torchrun / DDP: the process group, one alarm decision for every rank, rank 0 writes.

What each rank records and who decides:

- Gradient records are read after ``backward()``: under DDP the gradients are then all-reduced, so
  every rank records the same (synchronised) gradients.
- Embedding collapse and logit entropy are per rank: each rank records its own rows (with gathered
  features the logits' columns are every rank's candidates). The loss split uses the global chance
  (``candidates=`` B x world when gathered).
- Per step, one ``all_gather_object`` gives every rank every rank's loss values, recorded under
  ``<component>@rank<r>`` (never averaged: ranks may log different keys), the world size, and every
  `REPLICA_EVERY` steps a float64 checksum of the parameters, whose spread across ranks is recorded
  as ``replica_param_spread`` (replicas out of sync: `diagnose.core.rules.distributed`).
- Rank 0 alone evaluates the rules and broadcasts its new alarms; every rank raises the same alarm at
  the same step, so an alarm that stops training stops every rank.
- Rank 0 alone writes the run directory.

`Watch.observe` therefore runs collectives: call it on every rank at the same steps (as DDP's own
backward requires). A collective that fails (a rank died, the group timed out) raises `RankLost`,
one clear line.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..core.staging import staged

REPLICA_EVERY = 10  # steps between parameter checksums (one float64 reduction over the parameters)
TIMEOUT_S = float(os.environ.get("DIAGNOSE_DIST_TIMEOUT", "120"))  # a collective waits at most this long


class RankLost(RuntimeError):
    """A collective failed: another rank exited or the process group timed out."""


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_writer() -> bool:
    """Only rank 0 writes run directories and prints."""
    return world()[0] == 0


def launched() -> bool:
    """Started by torchrun (or with its environment variables) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(device: str = "cpu") -> Iterator[tuple[int, int]]:
    """Initialise the process group from torchrun's environment (gloo on CPU, nccl on CUDA) for the
    block, with a bounded timeout; a no-op for a single process or a group that is already running."""
    if not launched() or dist.is_initialized():
        yield world()
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_S))
    try:
        yield world()
    except RankLost:
        raise
    except RuntimeError as exc:  # DistBackendError is one; gloo raises plain RuntimeErrors
        if isinstance(exc, getattr(dist, "DistBackendError", ())) or _collective_text(str(exc)):
            raise collective_error(exc) from None
        raise
    finally:
        _release_group_users()
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001, S110 - a group broken by a lost rank cannot always be torn down
            pass


def _release_group_users() -> None:
    """Free what still holds the process group (a DDP model in the frames of an exception in flight, e.g.
    the command's typer.Exit) so the group's threads are joined now, not during interpreter shutdown,
    where gloo's worker thread can find the GIL gone and abort the process ("terminate called without
    an active exception", exit -6) after a successful run."""
    exc = sys.exc_info()[1]
    if exc is not None and exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)
    gc.collect()


def collective_error(exc: BaseException) -> RankLost:
    rank, size = world()
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return RankLost(f"rank {rank} of {size}: a collective failed (another rank exited or the group timed out "
                    f"after {TIMEOUT_S:g}s): {first}")


def _collective_text(msg: str) -> bool:
    return any(k in msg for k in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset", "timed out"))


@contextmanager
def output_dir(out) -> Iterator:
    """`diagnose.core.staging.staged(out)` on rank 0; elsewhere a scratch directory that is removed (rank 0
    alone writes)."""
    if is_writer():
        with staged(out) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="diagnose-rank") as tmp:
        yield Path(tmp)


LEAVE_TIMEOUT_S = 60  # a rank that never reaches the cap (a script whose ranks step differently) cannot hang the rest


def leave_together() -> None:
    """Where every rank stops at the same point the script did not choose (the ablation's step cap): wait for the other
    ranks, then tear the process group down, as the script's own `destroy_process_group()` after its loop would. A rank
    that exits while a peer is still closing its watch leaves that peer's gloo group talking to a closed socket,
    which aborts it (SIGABRT: about one run in eight of a 2-rank CPU test). Best effort: a failure here is ignored."""
    if world()[1] == 1:
        return
    import datetime

    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=LEAVE_TIMEOUT_S))
        else:
            dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - leaving is best effort; the run directory is already written
        pass


def agree_exit(code: int) -> int:
    """Rank 0's exit code on every rank (the ranks' own findings may differ: per-rank embeddings)."""
    if world()[1] == 1:
        return code
    box = [code]
    try:
        dist.broadcast_object_list(box, src=0)
    except Exception as exc:  # noqa: BLE001
        raise collective_error(exc) from None
    return int(box[0])


def param_checksum(model: torch.nn.Module) -> torch.Tensor:
    """(sum, sum of squares) of every parameter in float64: replicas in sync give identical values."""
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            x = p.detach().to(torch.float64)
            total += torch.stack([x.sum(), (x * x).sum()]).cpu()
    return total


class RankSync:
    """The collectives `diagnose.watch` runs per observed step under a process group."""

    def __init__(self, model: torch.nn.Module, replica_every: int = REPLICA_EVERY):
        self.model = getattr(model, "module", model)  # DDP wraps the module
        self.rank, self.size = world()
        self.replica_every = replica_every

    @classmethod
    def from_env(cls, model: torch.nn.Module) -> RankSync | None:
        return cls(model) if world()[1] > 1 else None

    def step_extras(self, step: int, losses: Mapping[str, Any]) -> dict[str, float]:
        """Extras every rank records alike: world size, each rank's losses by name, replica spread."""
        mine: dict[str, Any] = {"losses": {k: float(v) for k, v in losses.items()}}
        if step % self.replica_every == 0:
            mine["checksum"] = param_checksum(self.model).tolist()
        every = self._gather(mine)
        out = {"world_size": float(self.size), "rank": float(self.rank)}
        for r, payload in enumerate(every):
            out.update({f"{k}@rank{r}": v for k, v in payload["losses"].items()})
        sums = [p["checksum"] for p in every if "checksum" in p]
        if len(sums) == self.size:
            out["replica_param_spread"] = replica_spread(sums)
        return out

    def agree(self, alarms: list) -> list:
        """Rank 0's new alarms, on every rank."""
        box = [alarms if self.rank == 0 else None]
        try:
            dist.broadcast_object_list(box, src=0)
        except Exception as exc:  # noqa: BLE001 - gloo/nccl raise RuntimeError or DistBackendError
            raise collective_error(exc) from None
        return list(box[0] or [])

    def _gather(self, obj: Any) -> list:
        out: list = [None] * self.size
        try:
            dist.all_gather_object(out, obj)
        except Exception as exc:  # noqa: BLE001
            raise collective_error(exc) from None
        return out


def replica_spread(sums: list[list[float]]) -> float:
    """Largest relative difference of any rank's (sum, sum of squares) from rank 0's."""
    ref = sums[0]
    worst = 0.0
    for s in sums[1:]:
        for a, b in zip(s, ref):
            gap = abs(a - b) / max(abs(b), 1e-30)
            if math.isnan(gap):  # NaN parameters: no sync can be read from them
                return float("nan")
            worst = max(worst, gap)
    return worst

"""Batch mixing: does one sample's output depend on the other samples of its batch? A counterfactual on the
step's own tensors.

Probe ``batch_mixing``, target = module path (``<root>`` for the model):
  mixed_rel — the module's first call in a training forward is recomputed twice, without gradients and in
      eval mode (no dropout; batch norm on its running statistics): on the captured arguments, and on the
      same arguments cut to each half of the batch along their one axis whose size is the batch size.
      mixed_rel = ‖f(x)[part] − f(x[part])‖ / ‖f(x)[part]‖ over both halves and every output tensor with one
      axis of the batch's size.
      A module that treats samples independently gives ~1e-7 in float32; attention or a softmax over the
      batch axis (``nn.MultiheadAttention`` fed batch-first tensors with ``batch_first=False``, a softmax
      over dim 0) or a normalisation over it gives O(0.1-1).
  reordered_rel — the same with each recomputed row compared with its nearest row of the whole batch's outputs,
      wherever it sits, and likewise the rows of a third recomputation on the whole batch in a shuffled order
      (`shuffled_order`; the larger of the two): ~0 while mixed_rel is large means the module returns the samples'
      own rows in an order that depends on the batch (a sort by length for packing, not undone), not values mixed
      across them; rows built from several samples (a (layers, B, H) state viewed as (B, layers * H), a (K, B, D)
      output viewed as (B, K, D)) pair other samples when the order changes, rows the whole batch never had.
  low_precision — 1 when an output compared was float16 / bfloat16 (rounding alone then reaches ~1e-2).
Modules are tested from the root down: the root and its children always (the root can look clean because its
outputs are L2-normalised, which hides a pooling that scales with the batch size), below them only inside a
module that changes, so the deepest modules that mix are recorded too; then every attention module (class
name with "attention" / "attn") the descent did not reach. A module that is not called, is a
(DistributedData)Parallel or compiled wrapper, has no argument with exactly one
axis of the batch's size (or given as a list of one tensor per sample: images of their own size, token runs the
module packs itself; cut as a list), or raises on half a batch, is passed over and its children are tried instead.

When: the forward after observations `ARM_AT` (three early steps; the mixing is a property of the code,
not of training). Cost: hooks exist only during that one forward; each test is about 3 forwards of the
tested module, without gradients. Side effects are contained: the user's RNG state is forked, every
module's train/eval flag is restored, buffers (running statistics, a MoCo queue) are copied back, and the
modules' forward hooks are set aside during the recomputation (module-global hooks still see it).
Python attributes a forward changes (a queue pointer kept as an int) are not restored.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._records import Columns
from .base import Observation, Probe, module_label

if TYPE_CHECKING:
    from .session import ProbeSession

# the observations after which the next training forward is captured: early (an alarm needs two
# readings) and once later, when the first steps' numbers may have been degenerate
ARM_AT = (0, 2, 10)
# wrappers whose forward talks to other ranks or recompiles for a new shape: their inner module is tested
_WRAPPERS = ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel", "OptimizedModule")
_LOW = (torch.float16, torch.bfloat16)
# below these a module counts as clean and its children are not tested: float32 recomputation on a different
# batch size differs by ~1e-7 (another kernel may be picked), float16 / bfloat16 by up to ~1e-2
CLEAN_REL, CLEAN_REL_LOW = 1e-5, 1e-2
# attention modules are tested even inside a clean module: a [CLS] query that attends over the batch's
# identical [CLS] tokens gives every sample the same output, which no longer depends on the other samples
_ATTENTION = re.compile(r"attention|attn", re.IGNORECASE)


def _tensors(out: Any, depth: int = 0) -> list[torch.Tensor]:
    """The tensors of a module output in a fixed order (tuples, lists, dicts and ModelOutputs)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if depth > 3:
        return []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v, depth + 1)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v, depth + 1)]
    return []


def _batch_axis(t: torch.Tensor, b: int) -> int | None:
    """The one axis of size b (None: none; -1: more than one, so the batch axis cannot be told). Where the last
    axis also has size b, it is the features' (the axis every Linear, LayerNorm and attention projection acts
    on): a width that equals the batch size (d_model 32 at batch 32) leaves the other one as the batch axis."""
    axes = [a for a, n in enumerate(t.shape) if n == b]
    if len(axes) > 1 and axes[-1] == t.dim() - 1:
        axes = axes[:-1]
    return axes[0] if len(axes) == 1 else (-1 if axes else None)


def _per_sample(obj: Any, b: int) -> bool:
    """A plain list / tuple of b tensors none of which has an axis of size b: one tensor per sample (images of
    their own size, variable-length token runs that the module packs itself), the batch given as a list. A list
    of batched tensors (feature-pyramid levels, per-layer states) has the batch axis in each element instead."""
    return (type(obj) in (list, tuple) and len(obj) == b and b >= 4
            and all(isinstance(v, torch.Tensor) and _batch_axis(v, b) is None for v in obj))


SHUFFLED = "shuffled"  # a `part` of `_cut`: every sample, in the fixed shuffled order of `shuffled_order`


def shuffled_order(b: int) -> list[int]:
    """A fixed order of b samples with no sample in its own place nor beside its neighbour of the batch: rows a
    module builds from a run of neighbouring samples (a (K, B, D) buffer viewed as (B, K, D) reads each row from a
    block of B/K... neighbours) meet other samples in it, whereas reversing the batch maps such blocks onto
    themselves. Drawn from its own generator: the user's random state is not touched."""
    g = torch.Generator().manual_seed(b)
    for _ in range(100):
        order = torch.randperm(b, generator=g).tolist()
        if all(order[i] != i and abs(order[i] - order[i - 1]) != 1 for i in range(1, b)) and order[0] != 0:
            return order
    return order


def _cut(obj: Any, b: int, part: tuple[int, int] | str | None, found: list[int], depth: int = 0) -> Any:
    """`obj` with every tensor cut to the samples part = (start, length) along its axis of size b (a list of one
    tensor per sample: to that part of the list, `_per_sample`), all of them in the order of `shuffled_order` where
    part is SHUFFLED, or whole where part is None (clones either way, so a forward that writes into its input leaves the
    user's tensors alone); `found` counts the cut tensors (-1 on an ambiguous one)."""
    if isinstance(obj, torch.Tensor):
        axis = _batch_axis(obj, b)
        if axis == -1:
            found.append(-1)
            return obj
        if axis is None or part is None:
            return obj.detach().clone()
        found.append(1)
        if part == SHUFFLED:
            return obj.detach().index_select(axis, torch.tensor(shuffled_order(b), device=obj.device))
        return obj.detach().narrow(axis, *part).clone()
    if depth > 3:
        return obj
    if part is not None and depth > 0 and _per_sample(obj, b):  # one tensor per sample: the list is the batch
        found.append(1)
        kept = [obj[i] for i in shuffled_order(b)] if part == SHUFFLED else obj[part[0]:part[0] + part[1]]
        return type(obj)(v.detach().clone() for v in kept)
    if isinstance(obj, tuple):
        return tuple(_cut(v, b, part, found, depth + 1) for v in obj)
    if isinstance(obj, list):
        return [_cut(v, b, part, found, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {k: _cut(v, b, part, found, depth + 1) for k, v in obj.items()}
    return obj


def _nearest_rows(f: torch.Tensor, g: torch.Tensor, axis: int) -> float:
    """Sum over the rows of g (samples along `axis`) of the squared distance to the nearest row of f."""
    rows_f, rows_g = (t.float().movedim(axis, 0).reshape(t.shape[axis], -1) for t in (f, g))
    return float(torch.cdist(rows_g, rows_f).min(dim=1).values.pow(2).sum())


def mixing(module: nn.Module, args: tuple, kwargs: dict, b: int) -> tuple[float, float, bool] | None:
    """(mixed_rel, reordered_rel, low precision) of `module` on its captured call, or None when it cannot be
    tested. Both
    halves are recomputed alone: a pooling over the batch that one sample wins outright changes only the
    half without it."""
    parts = ((0, b // 2), (b // 2, b - b // 2))
    found: list[int] = []
    cuts = [(_cut(args, b, part, found), _cut(kwargs, b, part, found)) for part in parts]
    if b < 4 or not found or -1 in found:
        return None
    flags = [(m, m.training) for m in module.modules()]
    buffers = [(buf, buf.detach().clone()) for buf in module.buffers()]
    # the recomputation runs the modules' own code only: forward hooks (the user's, an ablation's, other probes')
    # are set aside for it and put back after, so nothing that counts or edits forwards sees these extra calls
    hooks = [(m, m._forward_pre_hooks, m._forward_hooks) for m in module.modules()]
    for m, _, _ in hooks:
        m._forward_pre_hooks, m._forward_hooks = OrderedDict(), OrderedDict()
    devices = sorted({t.device.index or 0 for t in module.parameters() if t.is_cuda})
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            module.eval()
            state = torch.random.get_rng_state()
            full = _tensors(module(*_cut(args, b, None, []), **_cut(kwargs, b, None, [])))
            halves = []
            for cut_args, cut_kwargs in cuts:
                torch.random.set_rng_state(state)
                halves.append(_tensors(module(*cut_args, **cut_kwargs)))
            torch.random.set_rng_state(state)
            flipped = _tensors(module(*_cut(args, b, SHUFFLED, []), **_cut(kwargs, b, SHUFFLED, [])))
    except Exception:  # a forward that cannot take half a batch (a fixed reshape) is not testable
        return None
    finally:
        for m, pre, post in hooks:
            m._forward_pre_hooks, m._forward_hooks = pre, post
        for m, was in flags:
            m.training = was
        for buf, saved in buffers:
            buf.copy_(saved)
    num = den = moved = 0.0
    low = False
    for part, half in zip(parts, halves):
        for f, g in zip(full, half):
            axis = _batch_axis(f, b)
            if axis is None or axis == -1 or not f.is_floating_point() or g.dim() != f.dim():
                continue
            ref = f.narrow(axis, *part)
            if ref.shape != g.shape:
                continue
            diff = float((ref.float() - g.float()).pow(2).sum())
            num += diff
            den += float(ref.float().pow(2).sum())
            low |= f.dtype in _LOW
            if diff > 0:  # each row of the half against its nearest row of the whole batch, wherever it sits
                moved += _nearest_rows(f, g, axis)
    # the whole batch shuffled: a module that only returns its samples' own rows in a batch-dependent order gives the
    # same rows again; one whose rows are built from several samples (a (layers, B, H) state viewed as
    # (B, layers * H), a (K, B, D) attention output viewed as (B, K, D)) pairs other samples and gives rows the whole
    # batch never had
    flip_moved = flip_den = 0.0
    for f, g in zip(full, flipped):
        axis = _batch_axis(f, b)
        if axis is None or axis == -1 or not f.is_floating_point() or g.shape != f.shape:
            continue
        flip_moved += _nearest_rows(f, g, axis)
        flip_den += float(f.float().pow(2).sum())
    if den == 0.0:
        return None
    moved_rel = math.sqrt(moved / den)
    if flip_den > 0:
        moved_rel = max(moved_rel, math.sqrt(flip_moved / flip_den))
    return math.sqrt(num / den), moved_rel, low


class BatchMixing(Probe):
    name = "batch_mixing"

    def setup(self, session: "ProbeSession") -> None:
        self.model = session.model
        self.names = {m: n for n, m in session.model.named_modules()}
        self._observed = 0
        self._handles: list[Any] = []
        self._calls: dict[nn.Module, tuple[tuple, dict]] = {}
        self.tested = 0

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        if self._handles:
            self._disarm()
            b = _batch_size(obs)
            if b and self._calls:
                rows = self._test(b)
                session.buffer.extend_columns(obs.step, self.name, rows)
            self._calls = {}
        if self._observed in ARM_AT:
            self._arm(session)
        self._observed += 1

    def _arm(self, session: "ProbeSession") -> None:
        def hook(module, args, kwargs):
            if torch.is_grad_enabled() and module not in self._calls:
                self._calls[module] = (args, kwargs)

        # a plain closure, not an OwnHook: torch.compile traces a hook, and through the wrapper's cell the dict keyed by
        # module is a second source for the same module (dynamo refuses it); armed for one step only, and a save
        # leaves it out by its module (`probes._hooks.without_own_hooks`)
        self._handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in self.model.modules()]

    def _disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _test(self, b: int) -> Columns:
        """Root down: below the root's children, clean modules end the descent; mixing and untestable ones hand it
        to their children.
        Then the attention modules the descent did not reach."""
        rows: list[tuple[str, float, float, bool]] = []
        seen: set[nn.Module] = set()
        todo = [self.model]
        while todo:
            module = todo.pop(0)
            seen.add(module)
            got = self._test_one(module, b)
            if got is not None:
                rows.append((module_label(self.names.get(module, "")), *got))
            clean = got is not None and got[0] < (CLEAN_REL_LOW if got[2] else CLEAN_REL)  # NaN: not clean
            if module is self.model or not clean:
                todo.extend(module.children())
        for module in [m for m in self._calls if m not in seen and _ATTENTION.search(type(m).__name__)]:
            got = self._test_one(module, b)
            if got is not None:
                rows.append((module_label(self.names.get(module, "")), *got))
        targets = [t for t, _, _, _ in rows for _ in (0, 1, 2)]
        metrics = ["mixed_rel", "reordered_rel", "low_precision"] * len(rows)
        values = [v for _, rel, moved, low in rows for v in (rel, moved, float(low))]
        return Columns(targets, metrics, values)

    def _test_one(self, module: nn.Module, b: int) -> tuple[float, float, bool] | None:
        call = self._calls.get(module)
        if call is None or type(module).__name__ in _WRAPPERS:
            return None
        got = mixing(module, call[0], call[1], b)
        self.tested += got is not None
        return got

    def coverage(self, session: "ProbeSession", records) -> dict:
        return {"batch_mixing_tests": self.tested}

    def close(self, session: "ProbeSession") -> None:
        self._disarm()
        self._calls = {}


def _batch_size(obs: Observation) -> int | None:
    if obs.batch_size:
        return int(obs.batch_size)
    for x in (*obs.embeddings.values(), *obs.logits.values()):
        if isinstance(x, torch.Tensor) and x.dim() >= 1:
            return int(x.shape[0])
    return None

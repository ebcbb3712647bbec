"""Trainable tensors on the loss's path that belong to neither the watched model nor the optimizer, read from
the autograd graph itself.

A module kept in a plain Python list or dict (``self.towers = [nn.Linear(...)]``), or a tensor made with
``requires_grad=True`` in ``forward``, feeds the loss and gets a gradient on every backward, yet
``model.parameters()`` does not list it, so an optimizer built from them never holds it: nothing steps it.
Neither the gradient probes (which read ``named_parameters()``) nor the optimizer probe can see it. The
graph can: walking ``grad_fn.next_functions`` back from the observed tensors reaches one ``AccumulateGrad``
node per leaf that requires grad (``node.variable`` is the leaf). The graph's nodes stay after
``loss.backward()`` (only their saved tensors are freed), so the walk works where `observe` is called.

Probe ``graph_leaves`` (python numbers, plus one norm per step while such leaves exist):
  once, at the first observation that has a graph to walk (each loss with a ``grad_fn``, and the embeddings
  and logits), and again when the optimizer's param groups change:
    target ``unregistered``: count (leaves requiring grad in no parameter of the model and no param group),
        numel, nodes (graph nodes visited), truncated (1 if the walk stopped at `MAX_NODES`)
    target ``leaf<i>:<shape>``, metric ``unregistered_numel``: the first `MAX_LISTED` such leaves
    target ``in_groups``: numel (values of the leaves on the path that a param group holds: what the
        optimizer can step, against which the unregistered values are weighed)
  again, up to `MAX_REWALKS` times, at an observation where every leaf the last walk found has been freed (the
  step's graph, which held them, is gone: they were made anew in a forward), with
    target ``unregistered``: recreated (1 if that walk found unregistered leaves again: tensors created at every
        forward, e.g. ``nn.Linear(...)(x)`` inside ``forward``, drawn afresh each step; else 0)
  on every measured step after that, while any of them is alive:
    target ``unregistered``: norm (the leaves' joint L2 norm: constant when nothing steps them; moving
        where a second optimizer does)
Leaves that do not require grad (inputs, a frozen teacher) are not in the graph's AccumulateGrad nodes. When
there are none, later steps cost one tuple comparison.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Iterable

import torch

from .base import Observation, Probe

if TYPE_CHECKING:
    from .session import ProbeSession

MAX_NODES = 100_000  # bound on the walk: a huge graph stops here (recorded as truncated), it cannot hang a step
MAX_LISTED = 16  # leaves listed by shape: enough to recognise the tower, bounded on many small tensors
# walks after the leaves were freed: three generations of fresh leaves are a creation per forward, not a model rebuilt
# once (a resume); bounded because each walk visits the whole graph
MAX_REWALKS = 2


class GraphLeaves(Probe):
    name = "graph_leaves"

    def __init__(self) -> None:
        self._layout: tuple[int, ...] | None = None  # param groups' sizes at the last walk
        self._walked = False
        self._leaves: list[weakref.ref] = []
        self._rewalks = 0

    def observe(self, session: "ProbeSession", obs: Observation) -> None:
        layout = _layout(session.optimizer)
        gone = bool(self._leaves) and not self.unregistered()  # freed with the graph that held them
        if not self._walked or layout != self._layout or (gone and self._rewalks < MAX_REWALKS):
            roots = [t for t in _tensors(obs) if t.grad_fn is not None]
            if roots:
                self._walk(session, obs.step, roots, gone)
                self._layout = layout
                self._walked = True
        if self._leaves and session.due(obs.step):
            self._norm(session, obs.step)

    def unregistered(self) -> list[torch.Tensor]:
        """The live leaves of the last walk that requires grad in no parameter of the model and no param group."""
        return [v for v in (r() for r in self._leaves) if v is not None]

    def _walk(self, session: "ProbeSession", step: int, roots: list[torch.Tensor], gone: bool = False) -> None:
        leaves, nodes, truncated = graph_leaves([t.grad_fn for t in roots])
        opt = session.optimizer
        grouped = {id(p) for g in opt.param_groups for p in g["params"]} if opt is not None else set()
        known = grouped | {id(p) for p in session.model.parameters()}
        found = [v for v in leaves if v.requires_grad and id(v) not in known]
        stepped = [v for v in leaves if v.requires_grad and id(v) in grouped]
        self._leaves = [weakref.ref(v) for v in found]
        rows = [("unregistered", "count", float(len(found))),
                ("unregistered", "numel", float(sum(v.numel() for v in found))),
                ("unregistered", "nodes", float(nodes)), ("unregistered", "truncated", float(truncated)),
                ("in_groups", "numel", float(sum(v.numel() for v in stepped)))]
        rows += [(f"leaf{i}:{'x'.join(map(str, v.shape)) or 'scalar'}", "unregistered_numel", float(v.numel()))
                 for i, v in enumerate(found[:MAX_LISTED])]
        if gone:
            self._rewalks += 1
            rows.append(("unregistered", "recreated", float(bool(found))))
        session.buffer.extend(step, self.name, rows)

    def _norm(self, session: "ProbeSession", step: int) -> None:
        """Joint norm of the live leaves: one sum of squares per device, read with the step's one transfer."""
        alive = self.unregistered()
        if not alive:
            self._leaves = []
            return
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for v in alive:
            by_device.setdefault(v.device, []).append(v.detach())
        with torch.no_grad():
            sums = [torch.stack([t.float().pow(2).sum() for t in ts]).sum() for ts in by_device.values()]
        session.buffer.later(step, self.name, sums,
                             lambda floats: [("unregistered", "norm", sum(floats) ** 0.5)])


def graph_leaves(roots: Iterable[object], max_nodes: int = MAX_NODES) -> tuple[list[torch.Tensor], int, bool]:
    """The leaf tensors (``AccumulateGrad.variable``) reachable backwards from the `roots` grad_fn nodes, in
    order of discovery and once each; the number of nodes visited; whether the walk stopped at `max_nodes`."""
    stack = [n for n in roots if n is not None]
    seen: set[object] = set()
    leaves: list[torch.Tensor] = []
    leaf_ids: set[int] = set()
    while stack:
        if len(seen) >= max_nodes:
            return leaves, len(seen), True
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)
        if isinstance(var, torch.Tensor) and id(var) not in leaf_ids:
            leaf_ids.add(id(var))
            leaves.append(var)
        stack.extend(nxt for nxt, _ in getattr(node, "next_functions", ()) if nxt is not None)
    return leaves, len(seen), False


def _tensors(obs: Observation) -> list[torch.Tensor]:
    values = list(obs.losses.values()) + list(obs.embeddings.values()) + list(obs.logits.values())
    return [v for v in values if isinstance(v, torch.Tensor)]


def _layout(opt: torch.optim.Optimizer | None) -> tuple[int, ...]:
    return () if opt is None else tuple(len(g["params"]) for g in opt.param_groups)

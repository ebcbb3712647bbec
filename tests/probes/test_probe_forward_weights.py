"""Probe forward_weights: a layer's output against its input through its current weight (autocast's weight cache
held across optimizer steps reads the growing distance; a region per forward, or none, reads 0)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probes import attach
from probes.forward_weights import ForwardWeights


def _run(mode: str, steps: int = 6):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 12), torch.randn(32, 8)
    outer = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "whole_loop" else contextlib.nullcontext()
    inner = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "per_forward" else contextlib.nullcontext
    with attach(model, opt, probes=[ForwardWeights()], expensive_every=1, strict=True) as session, outer:
        for step in range(steps):
            with inner():
                loss = F.mse_loss(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            session.observe(step, losses={"mse": loss})
            opt.step()
    df = session.records
    return df[df["probe"] == "forward_weights"]


def test_a_region_around_the_whole_loop_reads_the_casts_of_the_first_weights():
    rows = _run("whole_loop")
    stale = rows[rows["metric"] == "stale_output"].groupby("step")["value"].max()
    assert sorted(rows[rows["metric"] == "stale_output"]["target"].unique()) == ["0", "2"]
    assert stale.loc[0] == 0.0  # the first forward casts the weights as they are
    assert stale.loc[5] > 0.05 and stale.is_monotonic_increasing  # left behind by every step since
    at_step = rows[rows["metric"] == "autocast_at_step"]["value"]
    assert len(at_step) == 5 and (at_step == 1.0).all()  # steps 0-4 (the 6th observe's step reads at the next)


@pytest.mark.parametrize("mode", ["per_forward", "none"])
def test_a_region_per_forward_or_none_reads_zero(mode):
    rows = _run(mode)
    stale = rows[rows["metric"] == "stale_output"]["value"]
    assert len(stale) == 12 and float(stale.max()) <= 1e-6
    assert (rows[rows["metric"] == "autocast_at_step"]["value"] == 0.0).all()

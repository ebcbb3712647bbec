"""Records stay bounded whatever the number of steps: 20k steps of a tiny model under `diagnose.watch`."""

from __future__ import annotations

import sys

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import diagnose
from probes._records import RecordBuffer


def test_buffer_thins_history_uniformly_and_keeps_recent_steps_dense(tmp_path):
    buf = RecordBuffer(max_rows=1000, spill=str(tmp_path / "spill"))
    for step in range(2000):
        buf.later(step, "p", [torch.tensor(float(step)), 1.0], lambda f: [("t", "a", f[0]), ("t", "b", f[1])])
        buf.flush()
    df = buf.frame()
    assert len(df) <= 1000
    steps = sorted(df["step"].unique())
    assert steps[0] == 0 and steps[-1] == 1999
    old = [s for s in steps if s < buf.dense_from]
    assert all(s % buf.stride == 0 for s in old) and buf.stride > 1
    assert steps[-50:] == list(range(1950, 2000))  # the newest steps are all there
    assert (df["value"][df["metric"] == "a"] == df["step"][df["metric"] == "a"]).all()  # rows stay whole
    spilled = pd.concat([pd.read_parquet(p) if p.endswith(".parquet") else pd.read_csv(p) for p in buf.spilled])
    assert len(spilled) + len(df) == 4000  # nothing measured is lost: dropped rows were spilled first
    assert buf.thinning()["records_rows_dropped"] == len(spilled)


def test_20k_steps_under_watch_keep_bounded_records():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, 4)
    y = torch.randn(64, 4)
    sizes = []
    with diagnose.watch(model, opt, alarm="off", probes="cheap", max_records=20_000) as w:
        for step in range(20_000):
            idx = torch.randint(0, 64, (8,))
            a, b = F.normalize(model(x[idx]), dim=-1), F.normalize(y[idx], dim=-1)
            loss = F.cross_entropy(a @ b.T * 5, torch.arange(8))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, batch_size=8)
            opt.step()
            if step in (5_000, 19_999):
                cols = w.session.buffer._cols
                sizes.append(sum(sys.getsizeof(c) for c in cols.values()) + 24 * len(cols["value"]))
    recs = w.records
    assert len(recs) <= 20_000
    assert recs["step"].min() == 0 and recs["step"].max() == 19_999
    # the records' memory (5 column lists + a float object per value) is bounded by the row budget,
    # not by the steps: 20k rows x (5 pointers + 24-byte float) ~ 1.3 MB, with list over-allocation
    assert max(sizes) < 20_000 * (5 * 8 + 24) * 1.3, sizes
    cov = w.coverage()
    assert cov["records_rows_dropped"] > 0 and "kept every" in cov["records_thinned"]

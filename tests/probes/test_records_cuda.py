"""On a CUDA device: a step's values reach the host without the training loop waiting for the device, and the
records are the same as with a waiting transfer. Runs only where a GPU is present (CI has none; the session that
had one ran it there: docs/benchmarks.md, GPU)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diagnose
from probes import _records
from probes.batch_mixing import ARM_AT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Towers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.text = nn.Sequential(nn.Embedding(100, 32), nn.Flatten(), nn.Linear(4 * 32, 32))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))

    def forward(self, image, text):
        return F.normalize(self.image(image), dim=-1), F.normalize(self.text(text), dim=-1)


def _run(steps: int, probes: str = "cheap"):
    """A seeded run under `watch` on cuda; per step, the synchronising CUDA calls made inside the watch."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = Towers().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    image, text = torch.randn(16, 32, device=dev), torch.randint(0, 100, (16, 4), device=dev)
    w = diagnose.watch(model, opt, alarm="off", probes=probes, batch_size=16, expensive_every=10 ** 9)
    syncs = []
    for step in range(steps):
        img, txt = model(image, text)
        logits = model.logit_scale.exp() * img @ txt.T
        labels = torch.arange(16, device=dev)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                w.observe(step, losses={"total": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                          batch_size=16)
                opt.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs.append([f"{x.filename}:{x.lineno}" for x in caught if "synchroniz" in str(x.message)])
    records = w.records.sort_values(["step", "probe", "target", "metric"], kind="stable").reset_index(drop=True)
    w.close()
    return records, syncs


def test_the_loop_never_waits_for_the_device_on_a_cheap_step():
    """Step 0 is expensive (the first readings); the batch-mixing test reads its results per module on the three
    steps after ARM_AT (probes/batch_mixing.py), once per run."""
    records, syncs = _run(40)
    exempt = {0} | {a + 1 for a in ARM_AT}
    late = {step: s for step, s in enumerate(syncs) if step not in exempt and s}
    assert not late, late
    assert {"gradient_flow", "contrastive"} <= set(records["probe"])


def test_records_equal_those_of_a_waiting_transfer(monkeypatch):
    got, _ = _run(30)

    class Waiting(_records.Transfer):
        def __init__(self, values, wait=True):
            super().__init__(values, wait=True)

    monkeypatch.setattr(_records, "Transfer", Waiting)
    want, _ = _run(30)
    assert got[["step", "probe", "target", "metric"]].equals(want[["step", "probe", "target", "metric"]])
    torch.testing.assert_close(torch.tensor(got["value"].to_numpy()), torch.tensor(want["value"].to_numpy()),
                               rtol=1e-6, atol=1e-7, equal_nan=True)

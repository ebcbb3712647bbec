"""`RecordBuffer.flush(wait=False)`: values on their way from a CUDA device land later, in order, and every
read waits for them. A stand-in for the CUDA copy (a transfer that says when it is done) runs the logic on CPU;
`tests/probes/test_records_cuda.py` runs the real copy where a GPU is present."""

import pytest
import torch

from probes import _records
from probes._records import MAX_IN_FLIGHT, RecordBuffer, Transfer


class Slow(Transfer):
    """A transfer that stays pending until `done` is set (the CUDA copy's event, stood in for)."""

    done = False

    def __init__(self, values, wait=True):
        super().__init__(values)
        self.waited = wait

    @property
    def pending(self):
        return not self.waited

    def ready(self):
        return Slow.done


def test_values_in_flight_land_in_order_and_reads_wait(monkeypatch):
    monkeypatch.setattr(_records, "Transfer", Slow)
    Slow.done = False
    buf = RecordBuffer()
    buf.extend_values(0, "p", [("m", "loss")], [torch.tensor(1.5)])
    buf.flush(wait=False)
    assert buf.in_flight == 1 and len(buf) == 0  # the loop did not wait
    buf.extend_values(1, "p", [("m", "loss")], [torch.tensor(2.5)])
    buf.flush(wait=False)  # the first copy is not done: both stay in flight
    assert buf.in_flight == 2 and len(buf) == 0
    assert buf.columns_since(0, wait=False)["value"] == []  # the rule process gets them with a later request
    Slow.done = True
    buf.extend_values(2, "p", [("m", "loss")], [torch.tensor(3.5)])
    buf.flush(wait=False)  # done: the two earlier land, oldest first; the new one goes in flight
    assert buf._cols["step"] == [0, 1] and buf._cols["value"] == [1.5, 2.5] and buf.in_flight == 1
    frame = buf.frame()  # a read waits for everything
    assert frame["step"].tolist() == [0, 1, 2] and frame["value"].tolist() == [1.5, 2.5, 3.5]
    assert buf.in_flight == 0 and buf.appended == 3


def test_no_more_than_max_in_flight_behind_the_loop(monkeypatch):
    """A loop that never synchronises cannot queue copies without bound: past MAX_IN_FLIGHT the oldest lands."""
    monkeypatch.setattr(_records, "Transfer", Slow)
    Slow.done = False
    buf = RecordBuffer()
    for step in range(MAX_IN_FLIGHT + 3):
        buf.extend_values(step, "p", [("m", "loss")], [torch.tensor(float(step))])
        buf.flush(wait=False)
        assert buf.in_flight <= MAX_IN_FLIGHT + 1
    assert buf._cols["step"] == list(range(len(buf)))  # what landed is the oldest, in order
    assert len(buf) == MAX_IN_FLIGHT + 3 - buf.in_flight > 0


def test_cpu_values_never_wait_for_a_later_flush():
    """On CPU nothing is left in flight: the rows are there at the end of `flush(wait=False)`."""
    buf = RecordBuffer()
    buf.extend_values(0, "p", [("m", "a"), ("m", "b")], [torch.tensor(1.0), 2.0])
    buf.flush(wait=False)
    assert buf.in_flight == 0 and buf._cols["value"] == [1.0, 2.0]


class Late(Transfer):
    """Every transfer lands at the flush after the one that started it (a CUDA copy a step behind)."""

    def __init__(self, values, wait=True):
        super().__init__(values)
        self.waited, self.asked = wait, 0

    @property
    def pending(self):
        return not self.waited

    def ready(self):
        self.asked += 1
        return self.asked > 1


def _watched_run(probes: str, steps: int = 30, nan_at: int | None = None, late_grads: bool = False):
    import torch.nn.functional as F
    from torch import nn

    import diagnose

    torch.manual_seed(0)
    model = nn.ModuleDict({"image": nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32)),
                           "text": nn.Embedding(100, 32)})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    image, text = torch.randn(16, 32), torch.randint(0, 100, (16,))
    w = diagnose.watch(model, opt, alarm="off", probes=probes, batch_size=16, expensive_every=7)
    w.session.probes["gradient_flow"]._late = late_grads  # as on CUDA: note which gradient each norm read
    for step in range(steps):
        img, txt = F.normalize(model["image"](image), dim=-1), F.normalize(model["text"](text), dim=-1)
        logits = 14.0 * img @ txt.T
        loss = F.cross_entropy(logits, torch.arange(16))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == nan_at:
            model["text"].weight.grad[:3] = float("nan")
        w.observe(step, losses={"total": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                  batch_size=16)
        opt.step()
    records = w.records.sort_values(["step", "probe", "target", "metric"], kind="stable").reset_index(drop=True)
    w.close()
    return records


@pytest.mark.parametrize("probes", ["cheap", "all"])
def test_a_watched_run_records_the_same_when_every_value_lands_a_step_late(monkeypatch, probes):
    """The update after the optimizer step pairs with its own step's norms, the batched readings keep their
    steps, nothing is lost or added: the records equal those of a run whose values landed at once."""
    want = _watched_run(probes)
    monkeypatch.setattr(_records, "Transfer", Late)
    got = _watched_run(probes)
    assert len(got) == len(want) > 1000
    assert got[["step", "probe", "target", "metric"]].equals(want[["step", "probe", "target", "metric"]])
    torch.testing.assert_close(torch.tensor(got["value"].to_numpy()), torch.tensor(want["value"].to_numpy()),
                               rtol=0, atol=0, equal_nan=True)


def test_a_late_count_of_nan_elements_never_reads_another_steps_gradient(monkeypatch):
    """Where the gradient whose norm was not finite is gone when the norm lands (the loop set it to None), its
    NaN elements count as 1, a lower bound, instead of being read from whatever gradient is there now."""
    want = _watched_run("cheap", steps=12, nan_at=9, late_grads=True)
    monkeypatch.setattr(_records, "Transfer", Late)
    got = _watched_run("cheap", steps=12, nan_at=9, late_grads=True)

    def counts(frame):
        sel = frame[(frame["metric"] == "nonfinite_grad") & (frame["step"] == 9)]
        return dict(zip(sel["probe"] + "/" + sel["target"], sel["value"]))
    assert counts(want)["gradient_flow/text.weight"] == 3 * 32  # landed at once: the exact count
    assert counts(got)["gradient_flow/text.weight"] == 1.0
    assert counts(got)["gradient_flow.model/model"] >= 1.0  # the rule on NaN gradients still fires

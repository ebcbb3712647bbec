"""`diagnose.watch` end to end on tiny two-tower loops: the direct readings name the mechanism, the
verdict agrees with the causes, and the watch works without a `with` block."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diagnose

B = 32


class Towers(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.txt = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 16))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))


def _data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 6, generator=g)
    return z @ torch.randn(6, 16, generator=g), z @ torch.randn(6, 12, generator=g)


def _loop(w, model, opt, steps=40, text_no_grad=False, replace=False):
    x, t = _data()
    for step in range(steps):
        # with replacement, B=32 of 512 items puts a duplicate pair in most batches (a real false negative)
        idx = torch.randint(0, len(x), (B,)) if replace else torch.randperm(len(x))[:B]
        img = F.normalize(model.img(x[idx]), dim=-1)
        if text_no_grad:
            with torch.no_grad():
                txt = F.normalize(model.txt(t[idx]), dim=-1)
        else:
            txt = F.normalize(model.txt(t[idx]), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        opt.zero_grad()
        loss.backward()
        w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits, batch_size=B,
                  targets=labels)
        opt.step()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_without_a_with_block_the_watch_observes_and_close_writes_the_run(tmp_path):
    model = Towers()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    w = diagnose.watch(model, opt, out=tmp_path / "run", alarm="off", budget=None)
    _loop(w, model, opt, steps=20)
    w.close()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["runs"][0]["steps"] == 20 and (tmp_path / "run" / "report.md").exists()
    assert w.coverage()["steps_observed"] == 20


def test_an_lr_held_as_a_tensor_in_the_param_group_is_written_as_a_number(tmp_path):
    """An optimizer that writes a computed step size back into its group (Adafactor before transformers#9751), or a
    capturable one, leaves a 0-d tensor as the lr: the run directory's summary still writes (it failed to)."""
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(1e-2))
    w = diagnose.watch(model, opt, out=tmp_path / "run", alarm="off", budget=None)
    _loop(w, model, opt, steps=8)
    w.close()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["runs"][0]["optimizer"]["lr"] == pytest.approx(1e-2)


def test_a_tower_left_out_of_the_optimizer_is_named_with_its_parameters(tmp_path):
    model = Towers()
    opt = torch.optim.AdamW(list(model.img.parameters()) + [model.logit_scale], lr=3e-3)  # the text tower is missing
    with diagnose.watch(model, opt, out=None, alarm="off", budget=None) as w:
        _loop(w, model, opt)
    found = {f["id"]: f for f in w.result().to_dict()["findings"]}
    f = found["params_outside_optimizer"]
    assert set(f["evidence"]["parameters"]) == {"txt.0.weight", "txt.0.bias", "txt.2.weight", "txt.2.bias"}
    assert max(f["evidence"]["relative_norm_change"].values()) == 0.0
    assert w.result().runs[0].root_causes[0]["cause"] == "param_not_in_optimizer"


def test_a_healthy_loop_gets_no_direct_reading_finding_and_no_error_alarm():
    model = Towers()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # expensive probes on every step: under the default probe budget which steps are read depends on the timing
    with diagnose.watch(model, opt, out=None, alarm="off", budget=None, expensive_every=1) as w:
        _loop(w, model, opt, steps=60)
    summary = w.result().to_dict()
    ids = {f["id"] for f in summary["findings"] if f["severity"] != "info"}
    assert not ids & {"params_outside_optimizer", "lr_schedule_gone", "logits_candidates_mismatch",
                      "targets_off_diagonal", "loss_not_about_pairs", "false_negatives", "embedding_without_gradient"}
    assert not [a for a in w.alarms if a.finding.severity == "error"]
    assert summary["runs"][0]["verdict"]["learned"]


def test_sampling_with_replacement_is_read_as_false_negatives_that_cost_a_share_of_a_learned_loss():
    model = Towers()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with diagnose.watch(model, opt, out=None, alarm="off", budget=None, expensive_every=1) as w:
        _loop(w, model, opt, steps=60, replace=True)
    summary = w.result().to_dict()
    f = {f["id"]: f for f in summary["findings"]}["false_negatives"]
    # ~1 duplicate pair per batch: ~6% of rows; as the loss falls their ln 2 floor becomes a tenth of it or more
    assert 0.03 <= f["evidence"]["duplicate_share"]["image"] <= 0.1
    assert f["evidence"]["gap_share_of_loss"] >= 0.1 and f["severity"] == "warning"
    assert summary["runs"][0]["verdict"]["learned"]
    assert not [a for a in w.alarms if a.finding.severity == "error"]


def test_a_run_that_learned_with_an_error_cause_under_it_says_so():
    model = Towers()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with diagnose.watch(model, opt, out=None, alarm="off", budget=None) as w:
        _loop(w, model, opt, steps=60, text_no_grad=True)  # the image tower learns to match fixed text embeddings
    run = w.result().runs[0]
    assert run.root_causes[0]["cause"] == "no_gradient_path"
    if run.verdict.learned:
        assert ", but with an error cause: no_gradient_path" in run.verdict.label
    else:
        assert not run.verdict.label.startswith("learned")


def test_without_a_batch_size_chance_comes_from_the_logits_shape_and_the_report_says_so():
    model = Towers()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, t = _data()
    with diagnose.watch(model, opt, out=None, alarm="off", budget=None) as w:
        for step in range(10):
            idx = torch.randperm(len(x))[:B]
            img, txt = F.normalize(model.img(x[idx]), dim=-1), F.normalize(model.txt(t[idx]), dim=-1)
            other = F.normalize(model.txt(t[torch.randperm(len(x))[:B]]), dim=-1).detach()  # B extra negatives
            logits = model.logit_scale.exp() * img @ torch.cat([txt, other]).t()
            loss = F.cross_entropy(logits, torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits)
            opt.step()
    run = w.result().to_dict()["runs"][0]
    assert run["batch_size"] == B and run["candidates"] == 2 * B
    assert run["chance_loss"] == pytest.approx(math.log(2 * B)) and run["verdict"]["label"]
    from reports.markdown import verdict_line
    assert f"B from the logits' shape ({B}, {2 * B})" in verdict_line(run)


def _named_embeds_run(named: bool):
    import torch.nn.functional as F

    torch.manual_seed(0)
    enc = torch.nn.ModuleDict({"image": torch.nn.Linear(12, 8), "text": torch.nn.Linear(12, 8)})
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    with diagnose.watch(enc, opt, out=None, alarm="off", batch_size=16) as w:
        for step in range(12):
            x, t = torch.randn(16, 12, generator=g), torch.randn(16, 12, generator=g)
            img, txt = F.normalize(enc["image"](x), dim=-1), F.normalize(enc["text"](t), dim=-1)
            logits = 10 * img @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(16))
            opt.zero_grad()
            loss.backward()
            emb = {"image_embeds": img, "text_embeds": txt} if named else {"embeddings": {"image": img, "text": txt}}
            w.observe(step, losses={"clip": loss}, logits=logits, **emb)
            opt.step()
    return w.records


def test_image_embeds_and_text_embeds_are_the_embeddings_by_their_clip_names():
    a, b = _named_embeds_run(True), _named_embeds_run(False)
    assert {"image", "text"} <= set(a["target"])  # readings of the embeddings were taken
    pd.testing.assert_frame_equal(a, b)


def test_an_embedding_given_both_ways_is_a_clear_error():
    enc = torch.nn.Linear(4, 4)
    with diagnose.watch(enc, None, out=None, alarm="off") as w:
        x = torch.randn(4, 4)
        with pytest.raises(ValueError, match=r"image_embeds= and embeddings\['image'\] both given"):
            w.observe(0, embeddings={"image": x}, image_embeds=x)


@pytest.mark.parametrize("order", ["before_backward", "after_zero_grad"])
def test_observe_where_no_gradient_is_held_reads_no_missing_gradient(order):
    """`observe` called before `loss.backward()` (the step's gradients are the last step's: the first step holds
    none anywhere), or after `optimizer.zero_grad()` (none on any step, the parameters moving between): neither says
    anything about the loss's path; a healthy run gets no `no_gradient`."""
    torch.manual_seed(0)
    enc = torch.nn.ModuleDict({"image": torch.nn.Linear(12, 8), "text": torch.nn.Linear(12, 8)})
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    x_all = torch.randn(512, 12, generator=g)
    t_all = x_all @ torch.randn(12, 12, generator=g)
    with diagnose.watch(enc, opt, out=None, alarm="off", batch_size=32, budget=None) as w:
        for step in range(40):
            idx = torch.randint(0, 512, (32,), generator=g)
            img, txt = F.normalize(enc["image"](x_all[idx]), dim=-1), F.normalize(enc["text"](t_all[idx]), dim=-1)
            logits = 10 * img @ txt.t()
            loss = F.cross_entropy(logits, torch.arange(32))
            if order == "before_backward":
                w.observe(step, losses={"clip": loss}, image_embeds=img, text_embeds=txt, logits=logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if order == "after_zero_grad":
                opt.zero_grad()
                w.observe(step, losses={"clip": loss}, image_embeds=img, text_embeds=txt, logits=logits)
    out = w.result().to_dict()
    assert out["runs"][0]["verdict"]["learned"]
    assert not [f for f in out["findings"] if f["severity"] == "error"], out["findings"]
    assert w.alarms == []

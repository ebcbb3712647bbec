"""A script that opens several watches in turn is one run of the ablation (`diagnose.engine.ablation_env`,
stages): each watch gets the fix, the cap counts every stage's steps, the run directory is the last stage's."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import diagnose
from diagnose.engine.ablation_env import StepCap
from tests.engine.test_interventions import B, Towers, batch, step


def _launch(opt_first: bool, steps: range, state: dict):
    """One launch of a script whose resume replaces the model after the optimizer was built on a fresh one
    (the test19 resume case's bug): in the second launch the trained model is in no param group."""
    model = Towers()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    if "saved" in state and not opt_first:
        model = Towers()
        model.load_state_dict(state["saved"])  # replaced after the optimizer was built
    x, t = batch()
    with diagnose.watch(model, opt, batch_size=B) as w:
        for i in steps:
            state["losses"].append(step(model, opt, w, i, x, t).item())
    state["saved"] = model.state_dict()
    return model


def test_each_stage_gets_the_fix_and_the_run_directory_is_the_last(under_ablation, tmp_path):
    torch.manual_seed(0)
    spec = under_ablation("add_missing_params")
    state: dict = {"losses": []}
    _launch(False, range(0, 3), state)
    first = json.loads(open(spec["status"]).read())
    assert first["stages"] == 1 and first["observed"] == 3
    model = _launch(False, range(3, 8), state)
    status = json.loads(open(spec["status"]).read())
    assert status["stages"] == 2 and status["observed"] == 8 and not status["capped"]
    # stage 1 had every parameter in a group; stage 2's replaced model joined the optimizer and trained
    assert any(a.startswith("stage 1: at step 1 every parameter") for a in status["applied"]), status["applied"]
    assert any(a.startswith("stage 2: step 1: added") for a in status["applied"]), status["applied"]
    assert state["losses"][-1] < state["losses"][3]  # the resumed model moves (without the fix it cannot)
    records = pd.read_csv(tmp_path / "run" / "records.csv.gz")
    assert sorted(records["step"].unique()) == [3, 4, 5, 6, 7]  # the last stage's run directory, whole
    assert (tmp_path / "run" / "summary.json").is_file()
    assert model.image.weight.grad is not None


def test_the_cap_counts_every_stage_and_later_watches_are_the_scripts(under_ablation, tmp_path):
    torch.manual_seed(0)
    spec = under_ablation(None, steps=5)
    state: dict = {"losses": []}
    _launch(True, range(0, 3), state)
    with pytest.raises(StepCap):
        _launch(True, range(3, 10), state)
    status = json.loads(open(spec["status"]).read())
    assert status["capped"] and status["observed"] == 5 and status["stages"] == 2
    assert len(state["losses"]) == 4  # the 5th step ended in its observe
    model, opt = Towers(), None
    w = diagnose.watch(model, opt, out=None)  # after the cap: not the ablation's
    assert w.control is None and w.out is None
    w.close()


def test_a_watch_beside_the_open_one_is_the_scripts(under_ablation):
    under_ablation("lr_down")
    a = Towers()
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    with diagnose.watch(a, opt, batch_size=B) as first:
        second = diagnose.watch(Towers(), None, out=None)
        assert first.control is not None and second.control is None
        second.close()

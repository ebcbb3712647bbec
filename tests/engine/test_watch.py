"""`diagnose.watch` around a user's own loop: a flamingo-pytorch PerceiverResampler alignment model on
CPU (peer library from PyPI, random weights). Healthy control, injected faults, alarms, exceptions,
and the run directory that `diagnose report` rebuilds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diagnose
from tests.watch_checks import (
    assert_healthy_run,
    assert_report_rebuilds,
    assert_top_cause,
    summary,
)

flamingo = pytest.importorskip("flamingo_pytorch", reason="flamingo-pytorch is in the dev extra")

N, B, T, D, DT, E = 1024, 32, 16, 32, 24, 32


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    concepts = torch.randn(N, 8, generator=g)
    tokens = (concepts @ torch.randn(8, D, generator=g)).unsqueeze(1) + 0.5 * torch.randn(N, T, D, generator=g)
    texts = concepts @ torch.randn(8, DT, generator=g) + 0.1 * torch.randn(N, DT, generator=g)
    return tokens, texts


class Aligner(nn.Module):
    """Patch tokens -> PerceiverResampler -> mean over latents -> projection; text -> projection."""

    def __init__(self, detach_text: bool = False):
        super().__init__()
        self.resampler = flamingo.PerceiverResampler(dim=D, depth=2, dim_head=8, heads=2, num_latents=8)
        self.proj = nn.Linear(D, E)
        self.text = nn.Linear(DT, E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.detach_text = detach_text

    def forward(self, tokens, texts):
        lat = self.resampler(tokens.unsqueeze(1))[:, 0]  # (B, T, D) -> (B, latents, D)
        img = F.normalize(self.proj(lat.mean(1)), dim=-1)
        txt = self.text(texts)
        return img, F.normalize(txt.detach() if self.detach_text else txt, dim=-1)


def train(out, lr=1e-3, detach_text=False, steps=40, alarm="off", fail_at=None, seed=0, model=None, **watch_kwargs):
    torch.manual_seed(seed)
    tokens, texts = data(seed)
    model = model if model is not None else Aligner(detach_text)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    with diagnose.watch(model, opt, out=out, name="user", alarm=alarm, expensive_every=5, **watch_kwargs) as w:
        for step in range(steps):
            idx = torch.randint(0, N, (B,))
            img, txt = model(tokens[idx], texts[idx])
            logits = model.logit_scale.exp() * img @ txt.t()
            labels = torch.arange(B)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, logits=logits,
                      batch_size=B, inputs=tokens[idx], extras={"logit_scale": model.logit_scale.exp()})
            if fail_at is not None and step == fail_at:
                raise RuntimeError("user code failed")
            opt.step()
        with torch.no_grad():
            w.evaluate_retrieval(*model(tokens[:256], texts[:256]))
    return w



@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    out = tmp_path_factory.mktemp("healthy") / "run"
    return out, train(out)


def test_healthy_control_learns_without_error_findings_and_records_everything(healthy):
    out, w = healthy
    assert_healthy_run(out, w, B)


def test_peer_attention_is_observed(healthy):
    """flamingo-pytorch computes attention with `sim.softmax(dim=-1)`: a Tensor method, no nn.Softmax."""
    _, w = healthy
    ent = w.records[(w.records["probe"] == "softmax_entropy") & (w.records["metric"] == "entropy_mean")]
    attn = [t for t in ent["target"].unique() if t.startswith("resampler.layers")]
    assert attn, sorted(ent["target"].unique())


def test_detached_text_tower_is_named_as_the_root_cause(tmp_path):
    out = tmp_path / "run"
    train(out, detach_text=True, alarm="off")
    assert_top_cause(out, "no_gradient_path", "no_gradient")


def test_learning_rate_that_collapses_the_embeddings_is_named(tmp_path):
    out = tmp_path / "run"
    # budget=None: the rules every 5 steps. With the 2% budget on these ~10 ms steps the second evaluation
    # comes after the run ends, and an alarm that needs persistence cannot come from the first one
    w = train(out, lr=0.3, steps=40, budget=None)
    s = summary(out)
    run = s["runs"][0]
    assert not run["verdict"]["learned"], run["verdict"]
    assert run["root_causes"][0]["cause"] == "learning_rate_too_high", run["root_causes"]
    assert run["alarms"] and run["alarms"][0]["step"] <= 20 and w.alarms[0].step == run["alarms"][0]["step"]


def test_an_optimizer_without_an_lr_is_watched(tmp_path):
    """transformers' Adafactor with relative_step=True has lr None (it sizes its own steps): the watch reads its lr as
    NaN instead of failing the user's step, and the run's steps are still measured."""
    from transformers.optimization import Adafactor

    torch.manual_seed(0)
    tokens, texts = data(0)
    model = Aligner()
    opt = Adafactor(model.parameters(), lr=None, relative_step=True, warmup_init=True)
    with diagnose.watch(model, opt, out=None, alarm="off", probes="cheap") as w:
        for step in range(12):
            img, txt = model(tokens[:B], texts[:B])
            loss = F.cross_entropy(model.logit_scale.exp() * img @ txt.t(), torch.arange(B))
            opt.zero_grad()
            loss.backward()
            w.observe(step, losses={"clip": loss}, embeddings={"image": img, "text": txt}, batch_size=B)
            opt.step()
    df = w.session.records
    up = df[(df.probe == "gradient_flow.model") & (df.metric == "update_to_param")]["value"]
    assert len(up) == 12 and (up > 0).all() and (up < 1e-4).all()  # 1e-6 x step, times the weights' RMS


def test_alarm_raise_stops_the_loop_and_the_directory_is_still_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(diagnose.DiagnoseAlarm) as info:  # rules inside observe: the alarm step is exact
        train(out, detach_text=True, alarm="raise", background=False)
    assert info.value.alarm.finding.id == "no_gradient"
    assert info.value.alarm.step == info.value.alarm.delivered_at == 4  # the first evaluation, 5th step
    s = summary(out)
    assert "DiagnoseAlarm" in s["runs"][0]["interrupted"] and s["runs"][0]["steps"] == 5


def test_alarm_raise_in_the_background_stops_the_loop_or_is_raised_at_the_end(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(diagnose.DiagnoseAlarm) as info:  # default: the rules run in the child process
        train(out, detach_text=True, alarm="raise")
    alarm = info.value.alarm
    assert alarm.finding.id == "no_gradient" and alarm.step <= 10 and alarm.delivered_at >= alarm.step
    assert (out / "summary.json").exists()  # written before the alarm leaves the block


def test_alarm_callback_gets_the_finding(tmp_path):
    got = []
    train(None, detach_text=True, alarm=got.append, steps=12)
    assert got and got[0].finding.id == "no_gradient" and got[0].finding.evidence["parameters"]


def test_exception_removes_every_hook_and_writes_the_run(tmp_path):
    out = tmp_path / "run"
    from torch.nn.modules import module as module_mod

    sdpa = F.scaled_dot_product_attention
    model = Aligner()
    with pytest.raises(RuntimeError, match="user code failed"):
        train(out, fail_at=5, model=model)  # step 5 is an expensive step: the softmax mode was active
    assert F.scaled_dot_product_attention is sdpa
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._forward_hooks_always_called
               for m in model.modules())
    assert not torch.overrides._get_current_function_mode_stack() and not module_mod._global_forward_pre_hooks
    s = summary(out)
    assert s["runs"][0]["interrupted"].startswith("ended by RuntimeError")
    assert s["runs"][0]["steps"] == 6


def test_report_rebuilds_a_watch_run_directory(healthy):
    assert_report_rebuilds(healthy[0])


def test_evaluation_budget_uses_the_median_step_time_and_leaves_out_its_own_cost(monkeypatch):
    # a pause (validation, a checkpoint) between two steps must not make rule evaluation more frequent,
    # and the time of our own evaluation is not training time
    import types

    from diagnose.engine import online

    w = diagnose.watch(nn.Linear(2, 2), evaluate_every=0)
    clock = iter([0.1 * i for i in range(20)] + [12.0] + [12.0 + 0.1 * i for i in range(1, 10)])
    monkeypatch.setattr(online, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    for _ in range(30):
        w._time_step()
    assert w._step_time == pytest.approx(0.1)
    w._eval_in_last, w._t_last = 0.05, 12.9  # an evaluation ran inside the previous observe
    monkeypatch.setattr(online, "time", types.SimpleNamespace(perf_counter=lambda: 13.0))
    w._time_step()
    assert w._intervals[-1] == pytest.approx(0.05)


@pytest.mark.parametrize("budget", [0, -0.1, float("nan"), float("inf"), "2%"])
def test_an_invalid_evaluation_budget_is_a_clear_error(budget):
    with pytest.raises(ValueError, match="budget="):
        diagnose.watch(nn.Linear(2, 2), budget=budget)


def test_budget_none_evaluates_the_rules_every_evaluate_every_steps(monkeypatch):
    from diagnose.engine import watcher

    w = diagnose.watch(nn.Linear(2, 2), evaluate_every=5, budget=None)
    w._step_time, w._eval_time = 1e-6, 1.0  # evaluation costs a million steps: no budget, no spacing
    monkeypatch.setattr(watcher.Watch, "evaluate", lambda self: [])
    w._observed = 5
    w._maybe_evaluate(5)
    assert w._next_eval == 10
    budgeted = diagnose.watch(nn.Linear(2, 2), evaluate_every=5, background=False)
    budgeted._step_time, budgeted._eval_time, budgeted._observed = 1e-3, 1.0, 5
    budgeted._maybe_evaluate(5)
    assert budgeted._next_eval == 5 + math.ceil(1.0 / (0.02 * 1e-3))
    # in the background the spacing comes from the evaluation's own measured time, once it has ended
    from concurrent.futures import Future

    done: Future = Future()
    done.set_result(([], 1.0))
    monkeypatch.setattr(watcher.Watch, "_submit", lambda self, ctx: done)
    bg = diagnose.watch(nn.Linear(2, 2), evaluate_every=5)
    bg._step_time, bg._observed = 1e-3, 5
    bg._maybe_evaluate(5)
    assert bg._pending is not None and bg._collect(wait=True) == []
    assert bg._next_eval == 5 + math.ceil(1.0 / (0.02 * 1e-3))
    bg.close()


def test_rules_run_in_a_child_process_and_the_alarm_comes_with_a_later_observe():
    import os

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = {}
    with pytest.raises(diagnose.DiagnoseAlarm) as raised:
        with diagnose.watch(model, opt, alarm="raise", evaluate_every=5, probes="cheap") as w:
            for step in range(12):
                model[0](torch.randn(8, 4)).pow(2).mean().backward()
                w.observe(step, losses={"clip": torch.tensor(1.0)}, batch_size=8)  # never waits for the rules
                if step == 4:  # the first evaluation was shipped by this observe
                    seen["client"] = w._server
                    assert w._server is not None and w._server.server.proc.pid != os.getpid() and w.alarms == []
                    w._pending[0].result(timeout=60)  # let the child answer before the next observe
                opt.step()
    alarm = raised.value.alarm
    assert alarm.finding.id == "no_gradient" and (alarm.step, alarm.delivered_at) == (4, 5)
    # the block ended its session; the process stays for the next watch of this process
    assert w._server is None and seen["client"].server.alive


def test_rules_fall_back_to_a_thread_when_no_process_can_start(monkeypatch):
    import threading

    from diagnose.engine import online, rule_server

    def refuse():
        raise OSError("no processes here")

    threads = []

    def rules_in_thread(df, ctx):
        threads.append(threading.get_ident())
        return [(_fake_finding(), True)]

    monkeypatch.setattr(rule_server, "shared", refuse)
    monkeypatch.setattr(online, "evaluate_rules", rules_in_thread)
    got = []
    model = nn.Linear(4, 4)
    with diagnose.watch(model, alarm=got.append, evaluate_every=5, probes="cheap") as w:
        for step in range(5):
            model(torch.randn(8, 4)).pow(2).mean().backward()
            w.observe(step, losses={"clip": torch.tensor(1.0)}, batch_size=8)
    assert threads and threads[0] != threading.get_ident() and "no processes here" in w._server_error
    assert [(a.step, a.delivered_at) for a in got] == [(4, 4)]  # booked at close, never lost


def test_a_rule_process_that_dies_hands_over_to_a_thread():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with diagnose.watch(model, opt, alarm="off", evaluate_every=5, probes="cheap") as w:
        for step in range(12):
            model[0](torch.randn(8, 4)).pow(2).mean().backward()
            w.observe(step, losses={"clip": torch.tensor(1.0)}, batch_size=8)
            if step == 4:
                w._server.server.proc.kill()  # killed before (or while) answering the first request
                w._server.server.proc.wait()
                while not w._pending[0].done():
                    pass
            opt.step()
    assert "rule_server" in (w._server_error or "")
    assert [a.finding.id for a in w.alarms] == ["no_gradient"]  # evaluated in the thread instead


def _fake_finding():
    from diagnose.core.findings import Finding

    return Finding("no_gradient", "error", "run", "a test finding", {"k": 1}, "fix it", "enc.weight")


def test_close_books_an_evaluation_still_running():
    got = []
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with diagnose.watch(model, alarm=got.append, evaluate_every=5, probes="cheap") as w:
        for step in range(5):
            model[0](torch.randn(8, 4)).pow(2).mean().backward()
            w.observe(step, losses={"clip": torch.tensor(1.0)}, batch_size=8)
    assert [(a.step, a.delivered_at, a.finding.id) for a in got] == [(4, 4, "no_gradient")] and w._server is None

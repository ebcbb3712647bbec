"""Gradient and update rules (`diagnose.core.rules.gradients`): no gradient, gradient scale and fall,
non-finite values, update/param too high or too low, weights shrinking."""

from __future__ import annotations

import pytest

from diagnose.core import rules as R

from .harness import HEALTHY_LAYERS, LN_B, WIN, N, ctx, frame, ids, layers, loss, one, rec, tail, update_rows


def test_no_gradient_evidence():
    df = frame(rec("gradient_flow", "b.weight", "grad_is_none", {0: 1, 1: 1}),
               rec("gradient_flow", "a.bias", "grad_is_none", {1: 1}),
               rec("gradient_flow", "c.weight", "grad_norm", {0: 1.0, 1: 1.0}))
    f = one(R.gradient_presence(df, ctx()), "no_gradient")
    assert f.severity == "error"
    assert f.evidence["parameters"] == ["a.bias", "b.weight"] and f.target == "a.bias"
    assert f.evidence["steps"] == [0, 1]


def test_gradient_layer_evidence():
    dead, tiny, huge = "enc.layers.5", "enc.layers.6", "enc.layers.7"
    grad = {**HEALTHY_LAYERS, "enc.layers.4": 1.0, dead: 0.0, tiny: 1e-6, huge: 1e5}
    found = R.gradient_presence(layers(grad, zero={dead: 1.0}),
                                ctx()) + R.gradient_scale(layers(grad, zero={dead: 1.0}), ctx())
    assert sorted(ids(found)) == ["dead_gradients", "exploding_gradients", "vanishing_gradients"]
    d = one(found, "dead_gradients")
    assert d.severity == "error" and d.evidence["layers"] == [dead] and d.evidence["window_steps"] == [N - WIN, N - 1]
    v = one(found, "vanishing_gradients")
    assert v.severity == "warning" and v.target == tiny
    assert v.evidence["median_layer_grad_norm"] == pytest.approx(1.0)
    assert v.evidence["layers"] == {tiny: pytest.approx(1e-6)}
    e = one(found, "exploding_gradients")
    assert e.severity == "warning" and e.target == huge and e.evidence["layers"] == {huge: pytest.approx(1e5)}


def test_gradient_fall_evidence():
    gn = [1.0, 3.0, 10.0] + [2.0] * (N - 3 - WIN) + [0.01] * WIN
    df = frame(rec("gradient_flow.model", "model", "grad_norm", gn), loss("loss_clip", LN_B))
    f = one(R.gradient_fall(df, ctx()), "gradient_fall")
    ev = f.evidence
    assert f.severity == "warning"
    assert ev["peak_grad_norm"] == pytest.approx(10.0) and ev["peak_step"] == 2
    assert ev["end_grad_norm"] == pytest.approx(0.01) and ev["ratio"] == pytest.approx(1e-3)
    assert ev["window_steps"] == [N - WIN, N - 1]


def test_nonfinite_values_evidence():
    df = frame(rec("gradient_flow.model", "model", "nonfinite_grad", {0: 0, 1: 0, 2: 0, 3: 12, 4: 40}),
               rec("loss_split", "loss_mrl", "nonfinite", {0: 0, 1: 0, 2: 1, 3: 1, 4: 1}))
    f = one(R.nonfinite_values(df, ctx()), "nonfinite_values")
    assert f.severity == "error"
    assert f.evidence == {"first_step": 2, "steps_affected": 3, "nonfinite_grad_elements_first": 12.0,
                          "nonfinite_loss_components": ["loss_mrl"]}


def test_gradient_overflow_a_scaler_skipped_is_not_a_divergence():
    # GradScaler's first step: the scaled gradients overflow, the step is skipped, loss and embeddings stay finite
    grads = {0: 9, **{s: 0 for s in range(1, 8)}}
    df = frame(rec("gradient_flow.model", "model", "nonfinite_grad", grads),
               rec("loss_split", "loss_clip", "nonfinite", {s: 0 for s in range(8)}),
               rec("collapse", "image", "nonfinite_rows", {s: 0 for s in range(8)}))
    f = one(R.nonfinite_values(df, ctx()), "gradient_overflow_skipped")
    assert f.severity == "info"
    assert f.evidence == {"steps_overflowed": 1, "steps_observed": 8, "first_step": 0, "last_step": 0,
                          "finite_steps_after": 7}


@pytest.mark.parametrize("grads, embedding", [
    ({0: 0, 1: 0, 2: 0, 3: 5}, {}),  # the overflow on the last step: nothing yet says the weights escaped it
    ({0: 0, 1: 3, 2: 3, 3: 0, 4: 3}, {}),  # overflowed on most steps: most updates are lost
    ({0: 0, 1: 3, 2: 0, 3: 0}, {2: 4}),  # the weights took it: the next step's embeddings are NaN
])
def test_gradient_overflow_that_persists_or_reaches_the_weights_stays_an_error(grads, embedding):
    df = frame(rec("gradient_flow.model", "model", "nonfinite_grad", grads),
               rec("collapse", "image", "nonfinite_rows", {s: embedding.get(s, 0) for s in grads}))
    assert one(R.nonfinite_values(df, ctx()), "nonfinite_values").severity == "error"


def test_update_ratio_evidence():
    df = frame(rec("gradient_flow.layer", "enc.layers.0", "update_to_param", {0: 0.3, 1: 1e-3, 2: 2e-3}),
               rec("gradient_flow.layer", "enc.layers.1", "update_to_param", {0: 0.01, 1: 0.5, 2: 0.02}),
               rec("gradient_flow.layer", "enc.layers.2", "update_to_param", {0: 0.01, 1: 0.001, 2: 0.002}))
    context = ctx(optimizer={"lr": 1e-3, "matrix_lr_multiplier": 4.0})
    f = one(R.update_ratio(df, context), "update_ratio_high")
    ev = f.evidence
    assert f.severity == "warning" and f.target == "enc.layers.1"  # highest peak first
    assert list(ev["layers"]) == ["enc.layers.1", "enc.layers.0"]
    assert ev["layers"]["enc.layers.1"] == {"peak": 0.5, "at_step": 1, "median": pytest.approx(0.02)}
    assert ev["layers"]["enc.layers.0"]["at_step"] == 0
    assert ev["layers_above"] == 2 and ev["layers_total"] == 3
    assert ev["threshold"] == R.UPDATE_RATIO_HIGH and ev["lr"] == 1e-3 and ev["matrix_lr_multiplier"] == 4.0


def test_update_ratio_survives_a_layer_with_only_nan_updates():
    # a diverged step makes update_to_param NaN; the rule must still report the other layers
    df = frame(rec("gradient_flow.layer", "enc.layers.0", "update_to_param", {0: float("nan"), 1: float("nan")}),
               rec("gradient_flow.layer", "enc.layers.1", "update_to_param", {0: 0.5, 1: float("nan")}))
    f = one(R.update_ratio(df, ctx()), "update_ratio_high")
    assert f.evidence["layers"]["enc.layers.1"]["peak"] == 0.5 and f.evidence["layers"]["enc.layers.1"]["at_step"] == 0




def test_update_ratio_low_fires_when_even_the_peak_step_is_tiny():
    f = one(R.update_ratio_low(frame(*update_rows(0.5 * R.UPDATE_RATIO_LOW)), ctx()), "update_ratio_low")
    assert f.severity == "error" and f.evidence["peak_update_to_param"] < R.UPDATE_RATIO_LOW


def test_update_ratio_low_quiet_at_threshold_and_for_a_decayed_schedule_tail():
    assert R.update_ratio_low(frame(*update_rows(2 * R.UPDATE_RATIO_LOW)), ctx()) == []
    # a cosine tail: the last steps are tiny, but the run's largest step was healthy
    decayed = rec("gradient_flow.model", "model", "update_to_param", [1e-2] * 5 + [1e-9] * (N - 5))
    assert R.update_ratio_low(frame(decayed), ctx()) == []


def _rescaling(turn: float, update: float = 2.5e-4, grad: float = 1.0, n: int = 2 * N, rescale: float | None = None):
    """A run whose steps are a decay (update/param `update`, all of it the rescaling of tensors of two or more elements
    unless `rescale` says otherwise) and whose turning part is `turn`, loss at its start."""
    return frame(rec("gradient_flow.model", "model", "update_to_param", [update] * n),
                 rec("gradient_flow.model", "model", "update_turn_to_param", [turn] * n),
                 rec("gradient_flow.model", "model", "update_rescale_to_param",
                     [update if rescale is None else rescale] * n),
                 rec("gradient_flow.model", "model", "grad_norm", [grad] * n), loss("loss_clip", [4.4] * n))


def test_update_only_rescales_fires_when_the_step_is_a_decay_and_its_turn_is_tiny():
    # test33's clip before the loss scaler's unscale_: update 2.5e-4 = lr x wd / (1 - momentum), turn ~7e-7
    f = one(R.update_ratio_low(_rescaling(7e-7), ctx(optimizer={"lr": 0.05, "weight_decay": 5e-4})),
            "update_only_rescales")
    assert f.severity == "error" and f.evidence["peak_update_turn_to_param"] == pytest.approx(7e-7)
    assert f.evidence["peak_update_to_param"] == pytest.approx(2.5e-4)


def test_update_only_rescales_quiet_where_the_steps_turn_the_weights_or_no_gradient_came():
    assert R.update_ratio_low(_rescaling(2 * R.UPDATE_RATIO_LOW), ctx()) == []  # the gradient's part moves them
    assert R.update_ratio_low(_rescaling(0.0, grad=0.0), ctx()) == []  # no gradient: decay alone, other rules speak
    # test34's gather without autograd: only the logit scale (one element) gets a gradient and moves; no decay
    assert R.update_ratio_low(_rescaling(4e-13, update=3.6e-5, rescale=0.0), ctx()) == []
    # a run without the reading (older records): nothing to say
    df = frame(rec("gradient_flow.model", "model", "update_to_param", [2.5e-4] * N), loss("loss_clip", [4.4] * N))
    assert R.update_ratio_low(df, ctx()) == []


def _moved(per_step, losses, n: int = 100, grad: float = 10.0, turning: float = 0.95):
    return frame(rec("gradient_flow.model", "model", "update_to_param", per_step),
                 rec("gradient_flow.model", "model", "update_turn_to_param", [turning * u for u in per_step]),
                 rec("gradient_flow.model", "model", "grad_norm", [grad] * n), loss("loss_clip", losses))


def test_weights_barely_moved_fires_when_a_growing_step_sums_to_under_one_percent():
    # Adafactor's relative step with warmup_init: 1e-6 x step, summed over 100 steps ~5e-3; the loss stays above ln B
    n = 100
    f = one(R.weights_barely_moved(_moved([1e-6 * (s + 1) for s in range(n)], [4.8] * n), ctx()),
            "weights_barely_moved")
    assert f.severity == "error" and f.evidence["cumulative_update_to_param"] == pytest.approx(5.05e-3, rel=1e-3)
    assert not R.weights_barely_moved.alarm(f, frame())  # a whole-run reading: never a live alarm


def test_weights_barely_moved_quiet_when_the_run_moved_learned_or_had_no_gradient():
    n = 100
    assert R.weights_barely_moved(_moved([2e-4] * n, [4.8] * n), ctx()) == []  # 2% in all
    falling = [4.8 - 3.0 * s / n for s in range(n)]
    assert R.weights_barely_moved(_moved([1e-6 * (s + 1) for s in range(n)], falling), ctx()) == []
    assert R.weights_barely_moved(_moved([1e-6 * (s + 1) for s in range(n)], [4.8] * n, grad=0.0), ctx()) == []
    # steps that turn nothing: a logit scale moving alone while the towers get no gradient (test34's gather)
    assert R.weights_barely_moved(_moved([1e-6 * (s + 1) for s in range(n)], [4.8] * n, turning=1e-8), ctx()) == []
    # a peak under the per-step threshold is update_ratio_low's finding, not this one
    assert R.weights_barely_moved(_moved([5e-6] * n, [4.8] * n), ctx()) == []


def test_weights_shrinking_fires_when_the_norm_halves():
    pn = rec("gradient_flow.model", "model", "param_norm", tail(10.0, 10.0 * R.PARAM_SHRINK * 0.8))
    f = one(R.weights_shrinking(frame(pn), ctx(optimizer={"lr": 2e-4, "weight_decay": 1000})),
            "weights_shrinking")
    assert f.evidence["ratio"] < R.PARAM_SHRINK and f.evidence["weight_decay"] == 1000


def test_weights_shrinking_quiet_when_the_norm_holds_or_grows():
    assert R.weights_shrinking(frame(rec("gradient_flow.model", "model", "param_norm",
                                         tail(10.0, 10.0 * R.PARAM_SHRINK * 1.2))), ctx()) == []
    assert R.weights_shrinking(frame(rec("gradient_flow.model", "model", "param_norm", tail(10.0, 30.0))), ctx()) == []


def test_update_ratio_of_a_layer_grown_from_zero_is_not_an_lr_finding():
    """A logit scale initialised at 0 has update/param ~1/t under Adam while it grows: no scale of its
    own, no verdict on the learning rate; the same ratios on a layer with a norm are a finding."""
    import pandas as pd

    from diagnose.core.rules import RunContext, run_rules

    rows = []
    for step in range(10):
        for target, norm, ratio in (("<root>", 0.0 if step == 0 else 1e-3 * step, 1.0 / (step + 1)),
                                    ("encoder.0", 5.0, 1e-3)):
            rows += [(step, "gradient_flow.layer", target, "param_norm", norm),
                     (step, "gradient_flow.layer", target, "update_to_param", ratio)]
    df = pd.DataFrame(rows, columns=["step", "probe", "target", "metric", "value"])
    ctx = RunContext("r", 32, 32, None, {}, {"lr": 1e-3})
    assert not [f for f in run_rules(df, ctx, "records") if f.id == "update_ratio_high"]
    df = df.copy()  # record frames are treated as immutable (rules.base caches a per-frame index)
    df.loc[(df["target"] == "<root>") & (df["metric"] == "param_norm"), "value"] = 1e-3
    assert [f.target for f in run_rules(df, ctx, "records") if f.id == "update_ratio_high"] == ["<root>"]


def test_scale_update_high_names_the_temperature_and_not_the_layers():
    scale = frame(rec("gradient_flow.layer", "logit_scale", "numel", {0: 1.0}),
                  rec("gradient_flow.layer", "logit_scale", "update_to_param", [0.01] * 10 + [2.26] + [0.01] * 9),
                  rec("gradient_flow.layer", "logit_scale", "param_norm", 2.66),
                  rec("gradient_flow.layer", "proj", "numel", {0: 1024.0}),
                  rec("gradient_flow.layer", "proj", "update_to_param", 0.01),
                  rec("gradient_flow.layer", "proj", "param_norm", 3.0))
    f = one(R.scale_update_high(scale, ctx()), "scale_update_high")
    assert f.target == "logit_scale" and f.evidence["peak_update_to_param"] == 2.26
    assert R.update_ratio(scale, ctx()) == []  # a scalar is not a layer that a step rewrites
    # near miss: a scalar gate (not a temperature) and a temperature that moves slowly
    gate = scale.replace({"target": {"logit_scale": "blocks.0.gate"}})
    assert R.scale_update_high(gate, ctx()) == []
    slow = frame(rec("gradient_flow.layer", "logit_scale", "numel", {0: 1.0}),
                 rec("gradient_flow.layer", "logit_scale", "update_to_param", 0.01),
                 rec("gradient_flow.layer", "logit_scale", "param_norm", 2.66))
    assert R.scale_update_high(slow, ctx()) == []


def test_weights_shrinking_per_layer_when_the_total_holds():
    # decay on the projections only: they empty (10%) while LayerNorm-like layers keep the total at 70%
    total = rec("gradient_flow.model", "model", "param_norm", tail(10.0, 7.0))
    proj = rec("gradient_flow.layer", "proj", "param_norm", tail(3.0, 0.3))
    norms = rec("gradient_flow.layer", "norm", "param_norm", tail(9.0, 9.0))
    f = one(R.weights_shrinking(frame(total, proj, norms), ctx()), "weights_shrinking")
    assert list(f.evidence["layers_shrunk"]) == ["proj"] and "1 layer(s)" in f.message
    # near misses: the projection at 60% of its start; a shrunk layer too small to matter (a bias)
    kept = rec("gradient_flow.layer", "proj", "param_norm", tail(3.0, 1.8))
    assert R.weights_shrinking(frame(total, kept, norms), ctx()) == []
    tiny = rec("gradient_flow.layer", "bias", "param_norm", tail(0.1, 0.01))
    assert R.weights_shrinking(frame(total, tiny, norms), ctx()) == []
    # a layer shrinking while the model grows (a logit scale driven down by large steps): not decay
    grown = rec("gradient_flow.model", "model", "param_norm", tail(10.0, 25.0))
    assert R.weights_shrinking(frame(grown, proj, norms), ctx()) == []


def _dead_scalar(name: str, layer: str, numel: float):
    return frame(layers({"proj": 1e-2, layer: 0.0}, zero={"proj": 0.0, layer: 1.0}),
                 rec("gradient_flow.layer", layer, "numel", {0: numel}), rec("gradient_flow.layer", "proj", "numel",
                                                                             {0: 64.0}),
                 rec("gradient_flow", name, "zero_grad_frac", 1.0), rec("gradient_flow", name, "param_norm", 4.6052))


def test_a_temperature_scalar_without_gradient_pins_the_temperature_it_cuts_nothing_upstream():
    found = R.gradient_presence(_dead_scalar("logit_scale", "<root>", 1.0), ctx())
    f = one(found, "scale_without_gradient")
    assert "dead_gradients" not in ids(found)
    assert f.severity == "warning" and f.target == "logit_scale" and f.evidence["value_end"] == 4.6052
    # near misses: a dead layer of many elements, and a dead scalar not named like a temperature
    assert ids(R.gradient_presence(_dead_scalar("head.logit_scale", "head", 65.0), ctx())) == ["dead_gradients"]
    assert ids(R.gradient_presence(_dead_scalar("gate", "<root>", 1.0), ctx())) == ["dead_gradients"]


def test_an_unused_temperature_scalar_is_information_not_a_cut_gradient_path():
    def none(name, numel):
        return frame(rec("gradient_flow", name, "grad_is_none", 1.0), rec("gradient_flow", name, "numel", numel))

    found = R.gradient_presence(none("logit_scale", 1.0), ctx())
    assert ids(found) == ["temperature_unused"] and found[0].severity == "info"
    # near misses: a parameter of a tower, and a temperature-named tensor of many elements, stay errors
    both = R.gradient_presence(frame(none("logit_scale", 1.0), none("text.proj.weight", 1024.0)), ctx())
    assert sorted(ids(both)) == ["no_gradient", "temperature_unused"]
    assert one(both, "no_gradient").evidence["parameters"] == ["text.proj.weight"]
    assert ids(R.gradient_presence(none("head.scale", 64.0), ctx())) == ["no_gradient"]


def test_no_gradient_needs_a_step_that_held_one_or_parameters_that_stood_still():
    """No parameter held a gradient on any step read: the loss runs through a copy (the watched parameters stand
    still: no_gradient), or the gradients were cleared before each observe (they moved: no reading)."""
    def run(norms):
        return frame(rec("gradient_flow", "text.proj.weight", "grad_is_none", 1.0),
                     rec("gradient_flow", "text.proj.weight", "param_norm", norms))

    assert ids(R.gradient_presence(run(2.0), ctx())) == ["no_gradient"]
    assert R.gradient_presence(run([2.0 + 0.01 * s for s in range(N)]), ctx()) == []


def _no_grad_with_copy(copy_numel: float):
    """Two parameters (768 values) without a gradient, and `copy_numel` unregistered trainable values on the
    loss's path (probe graph_leaves)."""
    return frame(rec("gradient_flow", "text.proj.weight", "grad_is_none", 1.0),
                 rec("gradient_flow", "text.proj.weight", "numel", 512.0),
                 rec("gradient_flow", "text.proj.bias", "grad_is_none", 1.0),
                 rec("gradient_flow", "text.proj.bias", "numel", 256.0),
                 rec("graph_leaves", "unregistered", "numel", copy_numel))


def test_no_gradient_is_the_symptom_when_the_loss_runs_through_a_copy_of_the_parameters():
    f = one(R.gradient_presence(_no_grad_with_copy(768.0), ctx()), "no_gradient")
    assert f.severity == "warning" and f.evidence["unregistered_values_on_path"] == 768
    # near miss: fewer unregistered values on the path than the parameters hold (a stray tensor, not a copy)
    g = one(R.gradient_presence(_no_grad_with_copy(767.0), ctx()), "no_gradient")
    assert g.severity == "error" and "unregistered_values_on_path" not in g.evidence

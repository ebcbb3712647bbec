"""Rules on hand-made record sets: each finding fires just past its threshold and stays quiet just short of it.

Thresholds come from `diagnose.rules` so the tests follow them if they are retuned.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from diagnose import rules as R
from diagnose.definitions import LEARNED_LOSS_FRACTION
from diagnose.findings import severity_rank
from diagnose.rules import RunContext

COLUMNS = ["step", "probe", "target", "metric", "value"]
B = 64  # 63 negatives: well above FEW_NEGATIVES_WARN, so few_negatives stays quiet by default
LN_B = math.log(B)
N = 20  # steps per hand-made run; window(N steps) = the last max(WINDOW_MIN, ceil(N * WINDOW_FRAC))
WIN = max(R.WINDOW_MIN, math.ceil(N * R.WINDOW_FRAC))
LATENT = "vision.perceiver.latents"


def rec(probe: str, target: str, metric: str, values_by_step) -> pd.DataFrame:
    """Rows for one (probe, target, metric): a dict step -> value, a list (steps 0..n-1) or a scalar (N steps)."""
    if isinstance(values_by_step, dict):
        items = list(values_by_step.items())
    elif isinstance(values_by_step, (list, tuple)):
        items = list(enumerate(values_by_step))
    else:
        items = [(s, values_by_step) for s in range(N)]
    return pd.DataFrame([(int(s), probe, target, metric, float(v)) for s, v in items], columns=COLUMNS)


def frame(*parts: pd.DataFrame) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, (int, object, object, object, float))})
    return pd.concat(parts, ignore_index=True)


def ctx(batch_size: int = B, **kw) -> RunContext:
    return RunContext(kw.pop("name", "run"), batch_size, batch_size, **kw)


def tail(early: float, late: float, n: int = N) -> list[float]:
    """`early` everywhere except the end-of-run window, which holds `late`."""
    return [early] * (n - WIN) + [late] * WIN


def ids(findings) -> list[str]:
    return [f.id for f in findings]


def one(findings, fid: str):
    got = [f for f in findings if f.id == fid]
    assert len(got) == 1, (fid, ids(findings))
    return got[0]


# --- hand-made record sets: (rule, records, context) ---------------------------------------------


def loss(comp: str, values, chance: float = LN_B) -> pd.DataFrame:
    values = values if isinstance(values, (list, dict)) else [values] * N
    steps = list(values) if isinstance(values, dict) else range(len(values))
    return frame(rec("loss_split", comp, "value", values), rec("loss_split", comp, "chance", {s: chance for s in steps}))


def layers(grad: dict[str, float], zero: dict[str, float] | None = None, n: int = N) -> pd.DataFrame:
    parts = [rec("gradient_flow.layer", t, "grad_norm", [v] * n) for t, v in grad.items()]
    parts += [rec("gradient_flow.layer", t, "zero_grad_frac", [(zero or {}).get(t, 0.0)] * n) for t in grad]
    return frame(*parts)


HEALTHY_LAYERS = {f"enc.layers.{i}": 1.0 for i in range(4)}


def model_grad(peak: float, end: float, loss_end: float = LN_B) -> pd.DataFrame:
    return frame(rec("gradient_flow.model", "model", "grad_norm", tail(peak, end)),
                 loss("loss_clip", [LN_B] * (N - WIN) + [loss_end] * WIN))


def latents(**metrics) -> pd.DataFrame:
    base = {"rms": 0.02, "between_latent_std": 0.02, "cosine_mean": 0.0, "identical_rows": 0.0, "drift": 0.5}
    base.update(metrics)
    return frame(*[rec("latent_stats", LATENT, m, v) for m, v in base.items()])


def components(a: float | list, b: float | list, chance: float = LN_B) -> pd.DataFrame:
    return frame(loss("loss_clip", a, chance), loss("loss_mrl", b, chance))


def ranked(top1_end: float, loss_end: float = LN_B, p_pos: float = 1.05 / B) -> pd.DataFrame:
    """Contrastive logits whose in-batch top-1 reaches `top1_end` in the end window, and the loss."""
    return frame(loss("loss_clip", tail(LN_B, loss_end)),
                 rec("softmax_entropy", "logits.image_to_text", "top1_acc", tail(1 / B, top1_end)),
                 rec("softmax_entropy", "logits.image_to_text", "positive_prob_mean", p_pos))


def sharpenable(ce: float, best: float, factor: float, cos_pos: float, cos_neg: float = 0.0) -> pd.DataFrame:
    """Logits whose cross-entropy is `ce` as given and `best` at `factor` x sharper (end window), and the
    image~text pair cosines (alignment = 2 - 2 cos_pos)."""
    lg = [rec("softmax_entropy", t, m, tail(LN_B, v) if m != "best_scale_factor" else v)
          for t in ("logits.image_to_text", "logits.text_to_image")
          for m, v in (("cross_entropy", ce), ("cross_entropy_best_scale", best), ("best_scale_factor", factor))]
    return frame(loss("loss_clip", tail(LN_B, ce)), *lg, rec("collapse", "image~text", "alignment", 2 - 2 * cos_pos),
                 rec("collapse", "image~text", "negative_cosine", cos_neg))


TOL, CT = R.CHANCE_REL_TOL, R.COLLAPSE_COSINE
BAR = LEARNED_LOSS_FRACTION * LN_B  # the learned bar
TOP1_BAR = R.LEARNED_RECALL_FACTOR / B  # in-batch top-1 at which the ranking counts as learned

# id -> list of (severity, rule, records, ctx) that must produce exactly that finding
TRIGGERS = {
    "loss_at_chance": [("error", R.loss_at_chance, loss("loss_clip", tail(1.0, LN_B * (1 + 0.9 * TOL))), ctx()),
                       ("error", R.loss_at_chance, loss("loss_clip", LN_B * (1 - 0.9 * TOL)), ctx())],
    "loss_above_chance": [("error", R.loss_at_chance, loss("loss_clip", LN_B * (1 + 1.01 * TOL)), ctx())],
    "embedding_collapse": [("error", R.embedding_collapse, rec("collapse", "text", "cosine_mean", tail(0.1, CT + 1e-3)), ctx())],
    "intermediate_collapse": [("warning", R.embedding_collapse,
                               rec("collapse", "vision.encoder.layers.3", "cosine_mean", tail(0.1, CT + 1e-3)), ctx())],
    "input_shared_component": [
        ("warning", R.input_shared_component, rec("collapse", "input", "cosine_mean", R.SHARED_INPUT_COSINE + 0.01), ctx()),
        ("warning", R.input_shared_component, frame(rec("collapse", "input", "cosine_mean", R.SHARED_INPUT_COSINE + 0.01),
                                                    loss("loss_clip", LN_B * (1 - 0.99 * TOL))), ctx()),
        ("info", R.input_shared_component, frame(rec("collapse", "input", "cosine_mean", R.SHARED_INPUT_COSINE + 0.01),
                                                 loss("loss_clip", LN_B * (1 - 1.01 * TOL))), ctx()),
    ],
    "no_gradient": [("error", R.gradient_presence, rec("gradient_flow", "text.proj.weight", "grad_is_none", 1.0), ctx())],
    "dead_gradients": [("error", R.gradient_presence,
                        layers({**HEALTHY_LAYERS, "enc.layers.4": 0.0}, zero={"enc.layers.4": 1.0}), ctx())],
    "vanishing_gradients": [("warning", R.gradient_scale,
                             layers({**HEALTHY_LAYERS, "enc.layers.4": 0.5 * R.VANISHING_REL}), ctx())],
    "exploding_gradients": [("warning", R.gradient_scale,
                             layers({**HEALTHY_LAYERS, "enc.layers.4": 1.01 * R.EXPLODING_REL}), ctx())],
    "gradient_fall": [("warning", R.gradient_fall, model_grad(10.0, 10.0 * R.GRAD_FALL_RATIO * 0.5), ctx())],
    "nonfinite_values": [
        ("error", R.nonfinite_values, rec("gradient_flow.model", "model", "nonfinite_grad", {0: 0, 1: 0, 2: 7}), ctx()),
        ("error", R.nonfinite_values, rec("loss_split", "loss_clip", "nonfinite", {0: 0, 1: 1}), ctx()),
    ],
    "update_ratio_high": [("warning", R.update_ratio,
                           rec("gradient_flow.layer", "enc.layers.0", "update_to_param", {0: 1e-3, 1: 1.01 * R.UPDATE_RATIO_HIGH}),
                           ctx())],
    "attention_uniform": [("warning", R.attention_entropy,
                           rec("softmax_entropy", "enc.attn", "entropy_mean", tail(0.5, R.UNIFORM_ENTROPY + 0.005)), ctx())],
    "attention_entropy_collapse": [("warning", R.attention_entropy,
                                    rec("softmax_entropy", "enc.attn", "entropy_mean", tail(0.5, R.COLLAPSED_ENTROPY * 0.9)),
                                    ctx())],
    "temperature_at_clamp": [
        ("warning", R.temperature, rec("loss_split", "extras", "logit_scale", [14.29, 100.0 * (1 - 0.9 * R.CLAMP_REL)]), ctx()),
        ("warning", R.temperature, rec("loss_split", "extras", "logit_scale", [14.29, 50.0]), ctx(max_logit_scale=50.0)),
    ],
    "temperature_toward_1": [("warning", R.temperature,
                              rec("loss_split", "extras", "logit_scale", [14.29, 0.99 * R.LOW_LOGIT_SCALE]), ctx())],
    "loss_logging_inconsistent": [("error", R.logged_total,
                                   frame(rec("loss_split", "total", "value", 5.0),
                                         rec("loss_split", "total", "total_minus_weighted_sum",
                                             {s: (5.0 * 1.01 * R.LOGGING_REL_TOL if s == 7 else 0.0) for s in range(N)})),
                                   ctx())],
    "components_identical": [
        ("warning", R.identical_components, components(LN_B, LN_B + 0.9 * R.IDENTICAL_ATOL), ctx()),
        ("error", R.identical_components, components(2.0, 2.0 + 0.9 * R.IDENTICAL_ATOL), ctx()),
    ],
    "few_negatives": [("warning", R.few_negatives, frame(), ctx(batch_size=R.FEW_NEGATIVES_WARN)),
                      ("warning", R.few_negatives, frame(), ctx(batch_size=R.FEW_NEGATIVES_ERROR + 1)),
                      ("error", R.few_negatives, frame(), ctx(batch_size=R.FEW_NEGATIVES_ERROR))],
    "latents_symmetric": [("error", R.latent_symmetry, latents(identical_rows=[0.0] * (N - 1) + [3.0]), ctx()),
                          ("error", R.latent_symmetry, latents(between_latent_std=1e-9), ctx())],
    "latents_similar": [("warning", R.latent_symmetry, latents(cosine_mean=[0.1] * (N - 1) + [R.LATENT_COSINE + 1e-3]), ctx())],
    "latents_not_moving": [("warning", R.latents_not_moving,
                            latents(drift=[0.0] * R.LATENT_MIN_STEPS + [0.99 * R.LATENT_STILL]), ctx())],
    "latent_scale_normalised": [("info", R.latent_scale_normalised,
                                 frame(latents(), rec("latent_stats", LATENT, "norm_gain", {0: 1.01 * R.NORM_GAIN_REMOVES_SCALE}),
                                       rec("latent_stats", LATENT, "post_norm_rms", {0: 1.0})), ctx())],
    "logits_flat": [("error", R.flat_logits, ranked(1.01 * TOP1_BAR), ctx()),
                    ("error", R.flat_logits, ranked(0.95, LN_B * (1 - 0.9 * TOL)), ctx())],
    "temperature_limits_loss": [
        ("error", R.temperature_limits_loss, sharpenable(1.01 * BAR, 0.99 * BAR, R.TEMPERATURE_OFF_FACTOR, R.MARGIN_USED + 0.01), ctx()),
        # the room above a negative cosine of 0.5 is 0.5: a positive at 0.76 uses just over half of it
        ("error", R.temperature_limits_loss, sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, 0.76, 0.5), ctx()),
        # a scale that started too small and grew a little (transformers#13430's init of 1 in log space)
        ("error", R.temperature_limits_loss, frame(sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, 0.9),
                                                   rec("loss_split", "extras", "logit_scale", tail(2.72, 2.87))), ctx()),
    ],
}

# id -> list of (rule, records, ctx): just on the healthy side of the threshold, so that id must not appear
NEAR_MISSES = {
    "loss_at_chance": [(R.loss_at_chance, loss("loss_clip", LN_B * (1 - 1.01 * TOL)), ctx()),
                       # at chance early, learned by the end of the run: only the window counts
                       (R.loss_at_chance, loss("loss_clip", tail(LN_B, LN_B * (1 - 2 * TOL))), ctx()),
                       (R.loss_at_chance, loss("loss_clip", float("nan")), ctx())],
    "loss_above_chance": [(R.loss_at_chance, loss("loss_clip", LN_B * (1 + 0.99 * TOL)), ctx()),
                          (R.loss_at_chance, loss("loss_clip", tail(2 * LN_B, LN_B * (1 - 2 * TOL))), ctx())],
    "embedding_collapse": [(R.embedding_collapse, rec("collapse", "text", "cosine_mean", tail(0.1, CT - 1e-3)), ctx()),
                           (R.embedding_collapse, rec("collapse", "image", "cosine_mean", tail(0.99, 0.2)), ctx()),
                           # a collapsed input is the input_shared_component rule's business, not a collapse
                           (R.embedding_collapse, rec("collapse", "input", "cosine_mean", 0.99), ctx())],
    "intermediate_collapse": [(R.embedding_collapse,
                               rec("collapse", "vision.encoder.layers.3", "cosine_mean", tail(0.1, CT - 1e-3)), ctx()),
                              (R.embedding_collapse, rec("collapse", "input", "cosine_mean", 0.99), ctx())],
    "input_shared_component": [(R.input_shared_component,
                                rec("collapse", "input", "cosine_mean", R.SHARED_INPUT_COSINE - 0.01), ctx())],
    "no_gradient": [(R.gradient_presence, rec("gradient_flow", "text.proj.weight", "grad_is_none", 0.0), ctx())],
    "dead_gradients": [
        # exactly zero on all but one window step
        (R.gradient_presence, frame(layers(HEALTHY_LAYERS), rec("gradient_flow.layer", "enc.layers.4", "grad_norm", 0.5),
                                  rec("gradient_flow.layer", "enc.layers.4", "zero_grad_frac", [1.0] * (N - 1) + [0.999])),
         ctx()),
        # dead early, alive in the window
        (R.gradient_presence, frame(layers(HEALTHY_LAYERS), rec("gradient_flow.layer", "enc.layers.4", "grad_norm", 0.5),
                                  rec("gradient_flow.layer", "enc.layers.4", "zero_grad_frac", tail(1.0, 0.2))), ctx()),
    ],
    "vanishing_gradients": [(R.gradient_scale, layers({**HEALTHY_LAYERS, "enc.layers.4": 1.01 * R.VANISHING_REL}), ctx()),
                            # a dead layer is reported as dead, not also as vanishing
                            (R.gradient_scale, layers({**HEALTHY_LAYERS, "enc.layers.4": 0.0}, zero={"enc.layers.4": 1.0}),
                             ctx())],
    "exploding_gradients": [(R.gradient_scale, layers({**HEALTHY_LAYERS, "enc.layers.4": 0.99 * R.EXPLODING_REL}), ctx())],
    "gradient_fall": [(R.gradient_fall, model_grad(10.0, 10.0 * R.GRAD_FALL_RATIO * 1.01), ctx()),
                      # the gradient fell because the loss went down: converging, not saturated
                      (R.gradient_fall, model_grad(10.0, 10.0 * R.GRAD_FALL_RATIO * 0.5, loss_end=LN_B * (1 - 1.01 * TOL)),
                       ctx()),
                      # too few steps to tell an early peak from an end
                      (R.gradient_fall, rec("gradient_flow.model", "model", "grad_norm", [10.0] * R.WINDOW_MIN
                                              + [1e-6] * (R.WINDOW_MIN - 1)), ctx())],
    "nonfinite_values": [(R.nonfinite_values, frame(rec("gradient_flow.model", "model", "nonfinite_grad", 0.0),
                                                    rec("loss_split", "loss_clip", "nonfinite", 0.0)), ctx())],
    "update_ratio_high": [(R.update_ratio, rec("gradient_flow.layer", "enc.layers.0", "update_to_param",
                                               {0: 1e-3, 1: R.UPDATE_RATIO_HIGH}), ctx())],
    "attention_uniform": [(R.attention_entropy,
                           rec("softmax_entropy", "enc.attn", "entropy_mean", tail(0.99, R.UNIFORM_ENTROPY - 0.005)), ctx()),
                          # contrastive logits and per-head rows are not attention modules
                          (R.attention_entropy, frame(rec("softmax_entropy", "logits.clip", "entropy_mean", 1.0),
                                                      rec("softmax_entropy", "enc.attn.head0", "entropy_mean", 1.0)), ctx())],
    "attention_entropy_collapse": [(R.attention_entropy, rec("softmax_entropy", "enc.attn", "entropy_mean",
                                                             tail(0.01, R.COLLAPSED_ENTROPY * 1.1)), ctx()),
                                   (R.attention_entropy, frame(rec("softmax_entropy", "logits.clip", "entropy_mean", 0.0),
                                                               rec("softmax_entropy", "enc.attn.head3", "entropy_mean", 0.0)),
                                    ctx())],
    "temperature_at_clamp": [(R.temperature, rec("loss_split", "extras", "logit_scale",
                                                 [100.0, 100.0 * (1 - 1.01 * R.CLAMP_REL)]), ctx())],
    "temperature_toward_1": [(R.temperature, rec("loss_split", "extras", "logit_scale", [0.5, 1.01 * R.LOW_LOGIT_SCALE]),
                              ctx())],
    "loss_logging_inconsistent": [(R.logged_total, frame(rec("loss_split", "total", "value", 5.0),
                                                         rec("loss_split", "total", "total_minus_weighted_sum",
                                                             5.0 * 0.99 * R.LOGGING_REL_TOL)), ctx())],
    "components_identical": [
        (R.identical_components, components(2.0, 2.0 + 1.1 * R.IDENTICAL_ATOL), ctx()),
        # identical on 4 of the 5 window steps: under IDENTICAL_SHARE
        (R.identical_components, components(2.0, [2.1] * (N - WIN) + [2.0] * (WIN - 1) + [2.1]), ctx()),
        # the logged total of a single-component objective equals that component
        (R.identical_components, frame(loss("loss_clip", 2.0), rec("loss_split", "total", "value", 2.0),
                               rec("loss_split", "total", "total_minus_weighted_sum", 0.0)), ctx()),
    ],
    "few_negatives": [(R.few_negatives, frame(), ctx(batch_size=R.FEW_NEGATIVES_WARN + 1))],
    "latents_symmetric": [(R.latent_symmetry, latents(identical_rows=[3.0] * (N - 1) + [0.0], between_latent_std=1e-7), ctx())],
    "latents_similar": [(R.latent_symmetry, latents(cosine_mean=[0.999] * (N - 1) + [R.LATENT_COSINE - 1e-3]), ctx())],
    "latents_not_moving": [(R.latents_not_moving, latents(drift=[0.0] * R.LATENT_MIN_STEPS + [1.01 * R.LATENT_STILL]), ctx()),
                           # still, but too early to say it is not trained
                           (R.latents_not_moving, latents(drift=[0.0] * R.LATENT_MIN_STEPS), ctx())],
    "logits_flat": [(R.flat_logits, ranked(0.99 * TOP1_BAR), ctx()),  # ranking not (yet) learned
                    (R.flat_logits, ranked(0.95, LN_B * (1 - 1.01 * TOL)), ctx()),  # the loss left chance: not flat
                    (R.flat_logits, loss("loss_clip", LN_B), ctx())],  # no logits recorded
    "temperature_limits_loss": [
        # learned as given
        (R.temperature_limits_loss, sharpenable(0.99 * BAR, 0.5 * BAR, 4.0, 0.9), ctx()),
        # sharper logits would not reach the learned bar either: the ranking itself is short
        (R.temperature_limits_loss, sharpenable(1.5 * BAR, 1.01 * BAR, 4.0, 0.9), ctx()),
        # the best temperature is within the lag of a learned scale (grid optimum below 2x)
        (R.temperature_limits_loss, sharpenable(1.01 * BAR, 0.9 * BAR, 0.99 * R.TEMPERATURE_OFF_FACTOR, 0.9), ctx()),
        # the embeddings still have most of their cosine margin to win
        (R.temperature_limits_loss, sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, R.MARGIN_USED - 0.01), ctx()),
        # at ln(B) itself: logits_flat's condition
        (R.temperature_limits_loss, sharpenable(LN_B, 0.6 * BAR, 4.0, 0.9), ctx()),
        # the logged scale started sharp and fell 2x during the run: the optimizer drove it down
        (R.temperature_limits_loss, frame(sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, 0.9),
                                          rec("loss_split", "extras", "logit_scale", tail(14.3, 14.3 / R.TEMPERATURE_OFF_FACTOR))),
         ctx()),
        # no pair cosines recorded: the margin cannot be judged
        (R.temperature_limits_loss, sharpenable(1.3 * BAR, 0.6 * BAR, 4.0, 0.9).query("probe != 'collapse'"), ctx()),
    ],
    "latent_scale_normalised": [(R.latent_scale_normalised, frame(latents(), rec("latent_stats", LATENT, "norm_gain",
                                                                        {0: 0.99 * R.NORM_GAIN_REMOVES_SCALE, 5: 1e3})), ctx())],
}

ALL_IDS = {
    "loss_at_chance", "loss_above_chance", "embedding_collapse", "intermediate_collapse", "input_shared_component",
    "no_gradient", "dead_gradients", "vanishing_gradients", "exploding_gradients", "gradient_fall", "nonfinite_values",
    "update_ratio_high", "attention_uniform", "attention_entropy_collapse", "temperature_at_clamp",
    "temperature_toward_1", "loss_logging_inconsistent", "components_identical", "few_negatives", "latents_symmetric",
    "latents_similar", "latents_not_moving", "latent_scale_normalised", "logits_flat", "temperature_limits_loss",
}


def _cases(table):
    return [pytest.param(fid, *case, id=f"{fid}-{i}") for fid, cases in table.items() for i, case in enumerate(cases)]


# rules with their own triggering / quiet record sets in test_rules_extra.py
EXTRA_RULES = {R.update_ratio_low, R.embeddings_not_normalised, R.weights_shrinking, R.chance_not_collapsed,
               R.softmax_over_batch,
               # triggering and quiet cases in tests/distributed/test_rules_distributed.py
               R.gathered_gradient_scale, R.replicas_out_of_sync, R.chance_mismatch,
               # triggering (error, warning) and quiet cases in tests/diagnose/test_datasignal.py
               R.no_data_signal}


def test_every_rule_and_finding_id_is_covered():
    assert set(TRIGGERS) == ALL_IDS == set(NEAR_MISSES)
    assert {case[1] for cases in TRIGGERS.values() for case in cases} | EXTRA_RULES == set(R.RULES)
    assert {case[0] for cases in NEAR_MISSES.values() for case in cases} | EXTRA_RULES == set(R.RULES)
    # both severities of the findings that have two
    two = {"input_shared_component": {"info", "warning"}, "components_identical": {"warning", "error"},
           "few_negatives": {"warning", "error"}}
    for fid, severities in two.items():
        assert {case[0] for case in TRIGGERS[fid]} == severities, fid


@pytest.mark.parametrize("fid, severity, rule, df, context", _cases(TRIGGERS))
def test_rule_fires_past_threshold(fid, severity, rule, df, context):
    findings = rule(df, context)
    f = one(findings, fid)
    assert f.severity == severity
    assert f.run == context.name
    assert f.message and f.evidence


@pytest.mark.parametrize("fid, rule, df, context", _cases(NEAR_MISSES))
def test_rule_quiet_on_healthy_side(fid, rule, df, context):
    assert fid not in ids(rule(df, context))


@pytest.mark.parametrize("rule", R.RULES, ids=lambda r: r.name)
def test_rules_quiet_on_empty_records(rule):
    assert rule(frame(), ctx()) == []


# --- evidence carries the numbers ----------------------------------------------------------------


def test_loss_at_chance_evidence():
    late = LN_B * (1 + 0.5 * TOL)
    f = one(R.loss_at_chance(loss("loss_clip", tail(1.5, late)), ctx()), "loss_at_chance")
    ev = f.evidence
    assert f.severity == "error" and f.target == "loss_clip"
    assert ev["chance_ln_B"] == pytest.approx(math.log(B), abs=1e-4)
    assert ev["loss_mean"] == pytest.approx(late, abs=1e-4)
    assert ev["implied_candidates"] == pytest.approx(math.exp(late), abs=0.05)
    assert ev["window_steps"] == [N - WIN, N - 1]
    assert ev["first_step_loss"] == pytest.approx(1.5)
    assert ev["relative_gap"] == pytest.approx(0.5 * TOL, abs=1e-4)
    assert ev["batch_size"] == B and ev["component"] == "loss_clip"


def test_loss_above_chance_evidence():
    v = LN_B * 1.5
    f = one(R.loss_at_chance(loss("loss_mrl", v), ctx()), "loss_above_chance")
    assert f.severity == "error" and f.target == "loss_mrl"
    assert f.evidence["relative_gap"] == pytest.approx(0.5, abs=1e-4)
    assert f.evidence["implied_candidates"] == pytest.approx(math.exp(v), abs=0.05)


def test_loss_at_chance_per_component():
    df = frame(loss("loss_clip", LN_B), loss("loss_mrl", LN_B * 0.5))
    assert [(f.id, f.target) for f in R.loss_at_chance(df, ctx())] == [("loss_at_chance", "loss_clip")]


def test_embedding_collapse_evidence():
    cos = [0.1] * 5 + [0.97] * (N - 5)
    df = frame(rec("collapse", "image", "cosine_mean", cos), rec("collapse", "image", "effective_rank", {0: 40.0, N - 1: 1.2}))
    f = one(R.embedding_collapse(df, ctx()), "embedding_collapse")
    ev = f.evidence
    assert f.severity == "error" and f.target == "image"
    assert ev["cosine_mean_end"] == pytest.approx(0.97) and ev["cosine_mean_first"] == pytest.approx(0.1)
    assert ev["first_step_above_threshold"] == 5 and ev["first_step"] == 0
    assert ev["effective_rank_first"] == pytest.approx(40.0) and ev["effective_rank_end"] == pytest.approx(1.2)
    assert ev["window_steps"] == [N - WIN, N - 1]


def test_intermediate_collapse_evidence():
    f = one(R.embedding_collapse(rec("collapse", "proj", "cosine_mean", tail(0.2, 0.99)), ctx()), "intermediate_collapse")
    assert f.severity == "warning" and f.target == "proj"
    assert f.evidence["output"] == "proj" and f.evidence["cosine_mean_end"] == pytest.approx(0.99)
    assert f.evidence["cosine_mean_first"] == pytest.approx(0.2)


def test_input_shared_component_evidence():
    df = frame(rec("collapse", "input", "cosine_mean", 0.8), rec("collapse", "input", "top_sv_share", {0: 0.7, 10: 0.9}))
    f = one(R.input_shared_component(frame(df, loss("loss_clip", 1.0)), ctx()), "input_shared_component")
    assert f.severity == "info" and f.target == "input"
    assert f.evidence["input_cosine_mean"] == pytest.approx(0.8)
    assert f.evidence["top_singular_direction_share"] == pytest.approx(0.8)
    assert f.evidence["steps"] == [0, N - 1]


def test_no_gradient_evidence():
    df = frame(rec("gradient_flow", "b.weight", "grad_is_none", {0: 1, 1: 1}), rec("gradient_flow", "a.bias", "grad_is_none", {1: 1}),
               rec("gradient_flow", "c.weight", "grad_norm", {0: 1.0, 1: 1.0}))
    f = one(R.gradient_presence(df, ctx()), "no_gradient")
    assert f.severity == "error"
    assert f.evidence["parameters"] == ["a.bias", "b.weight"] and f.target == "a.bias"
    assert f.evidence["steps"] == [0, 1]


def test_gradient_layer_evidence():
    dead, tiny, huge = "enc.layers.5", "enc.layers.6", "enc.layers.7"
    grad = {**HEALTHY_LAYERS, "enc.layers.4": 1.0, dead: 0.0, tiny: 1e-6, huge: 1e5}
    found = R.gradient_presence(layers(grad, zero={dead: 1.0}), ctx()) + R.gradient_scale(layers(grad, zero={dead: 1.0}), ctx())
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


def test_attention_entropy_evidence():
    df = frame(rec("softmax_entropy", "enc.attn", "entropy_mean", tail(0.6, 0.995)),
               rec("softmax_entropy", "dec.attn", "entropy_mean", tail(0.4, 0.01)),
               rec("softmax_entropy", "mid.attn", "entropy_mean", 0.5))
    found = R.attention_entropy(df, ctx())
    assert sorted(ids(found)) == ["attention_entropy_collapse", "attention_uniform"]
    u, c = one(found, "attention_uniform"), one(found, "attention_entropy_collapse")
    assert u.severity == c.severity == "warning"
    assert u.target == "enc.attn" and u.evidence["modules"] == {"enc.attn": {"end": 0.995, "first": 0.6}}
    assert c.target == "dec.attn" and c.evidence["modules"] == {"dec.attn": {"end": 0.01, "first": 0.4}}


def test_temperature_evidence():
    f = one(R.temperature(rec("loss_split", "extras", "logit_scale", {0: 14.2857, 10: 100.0}), ctx()), "temperature_at_clamp")
    assert f.severity == "warning"
    assert f.evidence == {"logit_scale_first": 14.286, "logit_scale_end": 100.0, "clamp": 100.0, "steps": [0, 10]}
    f = one(R.temperature(rec("loss_split", "extras", "logit_scale", {0: 14.2857, 10: 1.05}), ctx()), "temperature_toward_1")
    assert f.severity == "warning" and f.evidence["logit_scale_end"] == pytest.approx(1.05)


def test_loss_logging_inconsistent_evidence():
    gap = {s: (0.25 if s == 7 else -0.1 if s == 9 else 0.0) for s in range(N)}
    df = frame(rec("loss_split", "total", "value", 5.0), rec("loss_split", "total", "total_minus_weighted_sum", gap),
               rec("loss_split", "loss_clip", "weight", 1.0), rec("loss_split", "loss_mrl", "weight", 0.5))
    f = one(R.logged_total(df, ctx()), "loss_logging_inconsistent")
    assert f.severity == "error"
    assert f.evidence == {"steps_inconsistent": 2, "steps_total": N, "max_abs_gap": 0.25, "at_step": 7,
                          "weights": {"loss_clip": 1.0, "loss_mrl": 0.5}}


@pytest.mark.parametrize("value, severity", [(LN_B, "warning"), (2.0, "error")])
def test_components_identical_evidence(value, severity):
    f = one(R.identical_components(components(value, value), ctx()), "components_identical")
    assert f.severity == severity and f.target == "loss_clip~loss_mrl"
    ev = f.evidence
    assert ev["components"] == ["loss_clip", "loss_mrl"] and ev["share_identical"] == 1.0
    assert ev["mean_value"] == pytest.approx(value, abs=1e-4) and ev["chance_ln_B"] == pytest.approx(LN_B, abs=1e-4)
    assert ev["window_steps"] == [N - WIN, N - 1]
    assert ("at ln(B)" in f.message) == (severity == "warning")


@pytest.mark.parametrize("batch, severity", [(R.FEW_NEGATIVES_WARN, "warning"), (R.FEW_NEGATIVES_ERROR, "error"), (2, "error")])
def test_few_negatives_evidence(batch, severity):
    f = one(R.few_negatives(frame(), ctx(batch_size=batch)), "few_negatives")
    assert f.severity == severity
    assert f.evidence == {"batch_size": batch, "negatives_per_row": batch - 1, "chance_ln_B": pytest.approx(math.log(batch), abs=1e-4)}


def test_latent_findings_evidence():
    df = latents(identical_rows=7.0, between_latent_std=0.0, cosine_mean=1.0, drift=[0.0] * 25)
    found = R.latent_symmetry(df, ctx()) + R.latents_not_moving(df, ctx())
    assert sorted(ids(found)) == ["latents_not_moving", "latents_symmetric"]  # symmetric supersedes similar
    s = one(found, "latents_symmetric")
    assert s.severity == "error" and s.target == LATENT
    assert s.evidence == {"identical_rows_end": 7.0, "between_latent_std_end": 0.0, "steps": [0, N - 1]}
    m = one(found, "latents_not_moving")
    assert m.severity == "warning" and m.evidence == {"drift_end": 0.0, "steps": [0, 24]}

    sim = one(R.latent_symmetry(latents(cosine_mean=[0.2] + [0.995] * (N - 1)), ctx()), "latents_similar")
    assert sim.severity == "warning"
    assert sim.evidence == {"cosine_mean_end": 0.995, "cosine_mean_first": 0.2, "steps": [0, N - 1]}


def test_latent_scale_normalised_evidence():
    df = frame(latents(rms=[0.02] * N), rec("latent_stats", LATENT, "norm_gain", {3: 50.0, 8: 2.0}),
               rec("latent_stats", LATENT, "post_norm_rms", {3: 1.0, 8: 1.0}))
    f = one(R.latent_scale_normalised(df, ctx()), "latent_scale_normalised")
    assert f.severity == "info" and f.target == LATENT
    assert f.evidence == {"latent_rms_first": 0.02, "norm_gain_first": 50.0, "post_norm_rms_first": 1.0, "step": 3}


# --- run_rules -----------------------------------------------------------------------------------


def test_run_rules_sorted_most_severe_first():
    df = frame(
        rec("loss_split", "extras", "logit_scale", [14.0, 1.0]),  # warning
        latents(), rec("latent_stats", LATENT, "norm_gain", {0: 50.0}),  # info
        loss("loss_clip", LN_B),  # error
        rec("collapse", "text", "cosine_mean", 0.99),  # error
        rec("collapse", "proj", "cosine_mean", 0.99),  # warning
    )
    found = R.run_rules(df, ctx(batch_size=8))  # few_negatives: warning
    assert {"loss_at_chance", "embedding_collapse", "temperature_toward_1", "intermediate_collapse", "few_negatives",
            "latent_scale_normalised"} <= set(ids(found))
    ranks = [severity_rank(f.severity) for f in found]
    assert ranks == sorted(ranks, reverse=True)
    assert found[0].severity == "error" and found[-1].severity == "info"


def test_run_rules_healthy_run_has_no_findings():
    learned = LN_B * 0.5
    df = frame(
        loss("loss_clip", tail(LN_B, learned)), loss("loss_mrl", tail(LN_B, learned + 0.3)),
        rec("loss_split", "total", "value", 2 * learned), rec("loss_split", "total", "total_minus_weighted_sum", 0.0),
        rec("loss_split", "extras", "logit_scale", [14.3, 20.0]),
        rec("collapse", "image", "cosine_mean", 0.1), rec("collapse", "text", "cosine_mean", 0.2),
        rec("collapse", "input", "cosine_mean", 0.2), rec("collapse", "proj", "cosine_mean", 0.3),
        layers(HEALTHY_LAYERS), rec("gradient_flow.model", "model", "grad_norm", tail(5.0, 1.0)),
        rec("gradient_flow.model", "model", "nonfinite_grad", 0.0), rec("gradient_flow", "w", "grad_is_none", 0.0),
        rec("gradient_flow.layer", "enc.layers.0", "update_to_param", 1e-3),
        rec("softmax_entropy", "enc.attn", "entropy_mean", 0.6), latents(),
    )
    assert R.run_rules(df, ctx()) == []

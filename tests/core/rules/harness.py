"""Hand-made record sets for the rule tests: rows per (probe, target, metric), contexts, and the
shapes of a loss, gradients, latents and logits that the topic tests and the catalogue table share.

Thresholds come from `diagnose.core.rules`, so the tests follow them if they are retuned."""

from __future__ import annotations

import math

import pandas as pd

from diagnose.core import rules as R
from diagnose.core.definitions import LEARNED_LOSS_FRACTION
from diagnose.core.rules.base import RunContext

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


def loss(comp: str, values, chance: float = LN_B) -> pd.DataFrame:
    values = values if isinstance(values, (list, dict)) else [values] * N
    steps = list(values) if isinstance(values, dict) else range(len(values))
    return frame(rec("loss_split", comp, "value", values),
                 rec("loss_split", comp, "chance", {s: chance for s in steps}))


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


TOL, CT = R.CHANCE_REL_TOL, R.COLLAPSE_COSINE


BAR = LEARNED_LOSS_FRACTION * LN_B  # the learned bar


TOP1_BAR = R.LEARNED_RECALL_FACTOR / B  # in-batch top-1 at which the ranking counts as learned


def update_rows(peak: float) -> list:
    """Model-level update/param: `peak` at step 0, a tenth of it after."""
    return [rec("gradient_flow.model", "model", "update_to_param", [peak] + [peak / 10] * (N - 1))]

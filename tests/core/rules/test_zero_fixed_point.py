"""Rule zero_fixed_point: tensors of zeros whose gradients are exactly zero at every reading, and near misses."""

from __future__ import annotations

from diagnose.core import rules as R
from diagnose.core.rules.persistence import PERSIST_MIN_OBS

from .harness import LN_B, N, ctx, frame, ids, loss, one, rec


def _param(name, zero_frac, norm, n=N):
    return frame(rec("gradient_flow", name, "zero_grad_frac", [zero_frac] * n),
                 rec("gradient_flow", name, "param_norm", [norm] * n))


def _dora(a_norm=0.0, b_norm=0.0, a_zero=1.0, b_zero=1.0, n=N):
    return frame(_param("image.0.lora_A", a_zero, a_norm, n), _param("image.0.lora_B", b_zero, b_norm, n),
                 _param("image.0.m", 0.0, 3.2, n))


def test_both_factors_at_zero_with_zero_gradients_are_an_error_and_an_alarm():
    df = frame(_dora(), loss("loss_clip", [1.3 * LN_B] * N))
    f = one(R.zero_fixed_point(df, ctx()), "zero_fixed_point")
    assert f.severity == "error" and f.evidence["parameters"] == ["image.0.lora_A", "image.0.lora_B"]
    assert f.evidence["readings"] == N and f.target == "image.0.lora_A" and "A ~ N(0, 1/r)" in f.next_step
    assert R.zero_fixed_point.alarm(f, df) is True
    learned = frame(_dora(), loss("loss_clip", [0.2 * LN_B] * N))
    assert one(R.zero_fixed_point(learned, ctx()), "zero_fixed_point").severity == "warning"


def test_near_misses_a_random_factor_a_zero_tensor_that_gets_gradients_and_too_few_readings():
    lossy = loss("loss_clip", [LN_B] * N)
    for df in (frame(_dora(a_norm=1.5, a_zero=0.0, b_zero=0.0), lossy),  # LoRA's recipe: A random, B zero gets
               # gradients
               frame(_param("head.weight", 0.0, 0.0), lossy),  # a zero-initialised head with gradients
               frame(_param("gate", 1.0, 0.0, n=PERSIST_MIN_OBS - 1), lossy),  # too few readings
               frame(_param("bias", 0.97, 0.0), lossy)):  # mostly, not exactly, zero gradients
        assert "zero_fixed_point" not in ids(R.zero_fixed_point(df, ctx()))
    # biases of zeros whose gradient is zero (a query's and a key's under a softmax over one key): their module gets
    # no gradient, a cut upstream; a lone tensor of zeros with no zero partner near it; a layer that gets no gradient
    # anywhere (the loss sends it none)
    attn = "text.layers.0.self_attn"
    for df in (frame(_param(f"{attn}.q_proj.bias", 1.0, 0.0), _param(f"{attn}.k_proj.bias", 1.0, 0.0), lossy),
               frame(_param("text.layers.0.adapter.weight", 1.0, 0.0), _param("image.layers.3.gate.weight", 1.0, 0.0),
                     lossy),
               frame(_dora(), rec("gradient_flow.layer", "image.0", "zero_grad_frac", [1.0] * N), lossy)):
        assert "zero_fixed_point" not in ids(R.zero_fixed_point(df, ctx()))
    # with its layer getting gradients elsewhere, the pair is read
    layer = rec("gradient_flow.layer", "image.0", "zero_grad_frac", [0.6] * N)
    assert "zero_fixed_point" in ids(R.zero_fixed_point(frame(_dora(), layer, lossy), ctx()))
    # zero gradients at first that then arrive (a gate that moves): not every reading, no finding
    z = [1.0] * 3 + [0.0] * (N - 3)
    moving = frame(rec("gradient_flow", "gate", "zero_grad_frac", z), rec("gradient_flow", "gate", "param_norm",
                                                                            [0.0] * N), lossy)
    assert "zero_fixed_point" not in ids(R.zero_fixed_point(moving, ctx()))

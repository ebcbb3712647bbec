"""The planning and the verdicts of `diagnose ablate -- python train.py` (no run: numbers in, verdicts out)."""

from __future__ import annotations

import math

import pytest

from diagnose.core.errors import ConfigError
from diagnose.lab.script_ablation import candidates_from, combine, judge, parse_fix


def run(ratio, learned=False, r1=None):
    return {"loss_over_lnB": ratio, "learned": learned, "r@1": r1}


@pytest.mark.parametrize("base, fixed, verdict", [
    (run(1.0), run(0.3, True), "confirmed"),  # a failed run learns
    (run(1.0), run(0.9), "inconclusive"),  # lower by 0.1, still failed
    (run(1.0), run(0.97), "refuted"),  # lower by 0.03 < 0.05: no real change
    (run(1.0), run(1.2), "refuted"),
    (run(1.0), run(math.nan), "refuted"),  # NaN never scores
    (run(math.nan), run(0.8), "confirmed"),  # the baseline diverged: finite and below chance is the fix
    (run(math.nan), run(0.99), "inconclusive"),  # finite, but at chance
    (run(0.4, True), run(0.3, True), "confirmed"),  # a learning run, clearly better
    (run(0.4, True, r1=0.5), run(0.3, True, r1=0.4), "inconclusive"),  # lower loss, worse retrieval
    (run(0.4, True), run(0.39, True), "refuted"),
    (run(0.4, True), run(0.36, True), "inconclusive"),  # between the chance band and the margin
    (run(1.0312), run(1.0312), "not applicable"),  # the same loss to the last bit: the fix did not act
    (run(1.0312), run(1.03120001), "refuted"),  # near-miss: it acted, and changed little
])
def test_judge(base, fixed, verdict):
    assert judge(base, fixed)[0] == verdict


def test_the_same_loss_to_the_last_bit_refutes_a_fix_measured_to_have_changed_the_run():
    # an input centred that a zeroed head ignores: the test happened, and the loss does not depend on it
    v, why = judge(run(1.0312), run(1.0312), ["changed the model's input on forward call 1"])
    assert v == "refuted" and "changed the model's input" in why
    assert judge(run(1.0312), run(1.0312), [])[0] == "not applicable"


def test_majority_over_seeds():
    assert combine([{"verdict": "confirmed"}, {"verdict": "confirmed"}, {"verdict": "refuted"}])[0] == "confirmed"
    assert combine([{"verdict": "confirmed"}, {"verdict": "refuted"}, {"verdict": "inconclusive"}])[0] == "inconclusive"
    assert combine([{"verdict": "not applicable"}] * 3)[0] == "not applicable"
    assert combine([{"verdict": "failed"}, {"verdict": "refuted"}, {"verdict": "refuted"}])[0] == "refuted"


def causes(*ids):
    return [{"root_causes": [{"cause": c} for c in ids]}]


def test_candidates_from_causes_with_a_contrast():
    names = [c.name for c in candidates_from(causes("learning_rate_too_high"), [], {})]
    assert names == ["lr_down", "warmup", "clip_grad", "lr_up"]  # all test one cause: lr_up as a contrast
    names = [c.name for c in candidates_from(causes("param_not_in_optimizer", "temperature"), [], {})]
    assert names == ["add_missing_params", "relink_optimizer", "clear_autocast_cache", "fix_temperature",
                     "rescale_logits"]  # two causes:
    names = [c.name for c in candidates_from(causes("param_not_in_optimizer"), [], {})]  # no control needed
    assert names == ["add_missing_params", "relink_optimizer", "clear_autocast_cache", "lr_down"]
    names = [c.name for c in candidates_from(causes("temperature"), ["auto", "lr_up:factor=100"], {})]
    assert names == ["lr_up:factor=100", "fix_temperature", "rescale_logits", "log_probabilities"]


def test_a_forward_pass_control_follows_when_nothing_was_refuted():
    from diagnose.lab.script_ablation import fallback_controls

    cands = candidates_from(causes("param_not_in_optimizer"), [], {})
    na = [{"id": c.name, "source": c.source, "verdict": "confirmed" if c.source != "control" else "not applicable"}
          for c in cands]
    assert [c.name for c in fallback_controls(cands, na)] == ["centre_inputs"]
    acted = [dict(h, verdict="refuted") if h["source"] == "control" else h for h in na]
    assert fallback_controls(cands, acted) == []  # a refuted control needs no other
    named = candidates_from(causes("param_not_in_optimizer"), ["add_missing_params"], {})
    assert fallback_controls(named, [{"id": "add_missing_params", "source": "named", "verdict": "confirmed"}]) == []
    # refuted, but a fix of the very cause another fix confirmed (lr_up beside test33's unscale before a clip, here
    # the first other fix of a too-low lr): no contrast yet
    low = candidates_from(causes("learning_rate_too_low"), [], {})
    same = [{"id": c.name, "source": c.source,
             "verdict": "refuted" if c.name == "lr_up" else "confirmed" if c.name == low[1].name
             else "not applicable"} for c in low]
    assert "lr_up" in [c.name for c in low] and [c.name for c in fallback_controls(low, same)] == ["centre_inputs"]
    shared = candidates_from(causes("shared_input_component"), [], {})  # centre_inputs is a candidate already
    assert fallback_controls(shared, [dict(h, verdict="not applicable") for h in
                                      ({"id": c.name, "source": c.source} for c in shared)]) == []


def test_named_fixes_and_variants():
    cands = candidates_from(causes("temperature"), ["clip_grad:max_norm=0.5"], {"big": ["--batch", "256"]})
    assert [(c.name, c.fix, c.params, c.args) for c in cands] == [
        ("clip_grad:max_norm=0.5", "clip_grad", {"max_norm": 0.5}, []), ("big", None, {}, ["--batch", "256"])]
    # the same fix with other parameters is another candidate; the same one twice is an error
    assert len(candidates_from([], ["reinit", "reinit:std=1"], {})) == 2
    with pytest.raises(ConfigError, match="given twice"):
        candidates_from([], ["reinit", "reinit"], {})
    with pytest.raises(ConfigError, match="unknown parameter"):
        candidates_from([], ["clip_grad:norm=1"], {})
    with pytest.raises(ConfigError, match="unknown fix"):
        candidates_from([], ["nope"], {})
    assert parse_fix("reinit:pattern=latent,std=1") == ("reinit", {"pattern": "latent", "std": 1.0})

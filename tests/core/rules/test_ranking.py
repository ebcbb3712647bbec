"""Root-cause ranking (`diagnose.core.rules.ranking`): it reads the rules' declarations; mechanisms
outrank symptoms; a learned run keeps only direct mechanisms; info findings never count."""

from __future__ import annotations

from diagnose.core import rules as R
from diagnose.core.rules import rank_root_causes


def test_root_causes_come_from_the_declarations():
    declared = R.declarations()
    for fid, e in declared.items():
        if e.cause is None:
            continue
        for sev in e.severities:
            got = rank_root_causes([{"id": fid, "severity": sev}], {"learned": False})
            if sev in e.implicates_at and e.tier == 3:  # contributing: listed under `unexplained`, never first
                assert [c["cause"] for c in got] == ["unexplained", e.cause] and got[1]["role"] == "contributing"
            elif sev in e.implicates_at:
                assert got[0]["cause"] == e.cause and got[0]["tier"] == e.tier, (fid, sev)
            else:
                assert got[0]["cause"] == "unexplained", (fid, sev)


def _f(fid: str, sev: str = "error") -> dict:
    return {"id": fid, "severity": sev}


def test_mechanism_outranks_symptoms_and_contributing_conditions():
    found = [_f("embedding_collapse"), _f("loss_at_chance"), _f("input_shared_component", "warning"),
             _f("update_ratio_high", "warning")]
    assert [c["cause"] for c in rank_root_causes(found, {"learned": False})][:3] == [
        "learning_rate_too_high", "embedding_collapse", "shared_input_component"]
    assert rank_root_causes(found + [_f("nonfinite_values")], {"learned": False})[0]["cause"] == "nonfinite_divergence"


def test_a_contributing_condition_is_never_first():
    # inputs with a dominant direction: healthy runs share them, so with a symptom the symptom leads
    found = [_f("embedding_collapse"), _f("input_shared_component", "warning")]
    ranked = rank_root_causes(found, {"learned": False})
    assert [(c["cause"], c["role"]) for c in ranked] == [("embedding_collapse", "symptom"),
                                                         ("shared_input_component", "contributing")]


def test_learned_runs_keep_only_direct_mechanisms_and_info_never_counts():
    found = [_f("loss_logging_inconsistent"), _f("update_ratio_high", "warning"), _f("input_shared_component", "info")]
    assert [c["cause"] for c in rank_root_causes(found, {"learned": True})] == ["logging_misstates_loss"]
    assert rank_root_causes([_f("loss_at_chance")], {"learned": False})[0]["cause"] == "unexplained"
    assert rank_root_causes([_f("components_identical", "warning")], {"learned": True}) == []

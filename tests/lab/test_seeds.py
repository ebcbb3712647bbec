"""--seeds K: every run repeated over K seeds; verdicts count the seeds, a fix is confirmed only on a
majority, the report shows the spread and `diagnose report` rebuilds it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from diagnose.cli import app
from diagnose.core.seed_counts import seed_section
from diagnose.lab.ablation import combine_seeds
from diagnose.lab.executors import RUN_THREADS

runner = CliRunner()
TINY = ["--scale", "tiny", "--quiet", "--set", "dataset.num_train=256", "--set", "dataset.num_val=32",
        "--set", "dataset.batch_size=16"]


def decided(*verdicts: str) -> list[tuple[int, dict]]:
    return [(seed,
             {"id": "h", "verdict": v, "summary": f"seed {seed} says {v}", "evidence": {"fix": {"loss_clip": 1.0}}})
            for seed, v in enumerate(verdicts)]


@pytest.mark.parametrize("verdicts, expected, agree", [
    (("confirmed", "refuted", "refuted"), "refuted", False),         # a fix that works on 1 of 3 seeds is not confirmed
    (("confirmed", "refuted", "inconclusive"), "inconclusive", False),
    (("confirmed", "confirmed", "refuted"), "confirmed", False),     # a majority confirms, and the split is said
    (("confirmed", "confirmed", "confirmed"), "confirmed", True),
    (("confirmed", "failed", "failed"), "inconclusive", False),      # one seed is not a majority of three
    (("failed", "failed"), "failed", True),
    (("confirmed", "refuted"), "inconclusive", False),               # 1 of 2 is no majority
    # replicas stopped early at chance ("not restored") count as not learned, but only a full-length run
    # can tell refuted from a late partial improvement (inconclusive)
    (("refuted", "not restored", "not restored"), "refuted", True),
    (("inconclusive", "not restored", "not restored"), "inconclusive", False),
    (("confirmed", "not restored", "not restored"), "inconclusive", False),
])
def test_majority_over_seeds(verdicts, expected, agree):
    out = combine_seeds(decided(*verdicts))
    assert out["verdict"] == expected
    assert out["seeds"]["agree"] is agree
    assert out["seeds"]["counts"]["confirmed"] == verdicts.count("confirmed")
    k = len(verdicts)
    assert out["summary"].startswith("; ".join(f"{v} on {verdicts.count(v)}/{k} seeds"
                                               for v in ("confirmed", "refuted", "not restored", "inconclusive",
                                                         "failed")
                                               if v in verdicts))
    assert ("disagree" in out["summary"]) is not agree


def test_one_seed_is_the_plain_verdict():
    (seed, only), = decided("confirmed")
    assert combine_seeds([(seed, only)]) is only


def test_seed_section_counts_learned_runs():
    runs = [{"name": n, "seed": s, "chance_loss": 4.85, "final_loss": {"loss_clip": loss},
             "verdict": {"learned": loss < 2, "label": "learned" if loss < 2 else "did not learn",
                         "loss_over_chance": loss / 4.85},
             "retrieval": {"r@1": 0.5, "chance@1": 0.001}}
            for n, s, loss in (("direct", 0, 0.1), ("direct (seed 1)", 1, 4.85), ("direct (seed 2)", 2, 0.2))]
    g = seed_section(runs, {"direct": ["direct", "direct (seed 1)", "direct (seed 2)"]})["direct"]
    assert (g["learned"], g["seeds"], g["agree"]) == (2, 3, False)
    assert [r["seed"] for r in g["rows"]] == [0, 1, 2]


def test_compare_over_seeds_counts_and_rebuilds(tmp_path):
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["compare", "perceiver", "direct", "--steps", "8", "--seeds", "2", "--out", str(out), *TINY])
    assert r.exit_code in (0, 1), r.output
    summary = json.loads((out / "summary.json").read_text())
    names = [run["name"] for run in summary["runs"]]
    assert names == ["perceiver_mrl_alignment", "perceiver_mrl_alignment (seed 1)", "pixmo_alignment",
                     "pixmo_alignment (seed 1)"]
    assert [run["seed"] for run in summary["runs"]] == [0, 1, 0, 1]
    # the two seeds differ in data and init, not just in name
    losses = [run["final_loss"]["loss_clip"] for run in summary["runs"]]
    assert losses[0] != losses[1] and losses[2] != losses[3]
    for label in ("perceiver_mrl_alignment", "pixmo_alignment"):
        g = summary["seeds"][label]
        learned = sum(run["verdict"]["learned"] for run in summary["runs"] if run["name"].startswith(label))
        assert g["seeds"] == 2 and g["learned"] == learned
        assert f"{label}: learned on {g['learned']}/2 seeds" in r.output
    report = (out / "report.md").read_text()
    assert "## Across seeds" in report and "| seed | steps | CLIP loss | ln(B) |" in report
    # one answer per config first, then the per-seed detail; the title names each config once
    assert report.startswith("# Diagnosis: perceiver_mrl_alignment vs pixmo_alignment (2 seeds each)\n")
    assert report.index("## Answer across seeds") < report.index("## Verdict") < report.index("## Across seeds")
    assert report.count("\nNext: ") <= 1 and report.count("diagnose ablate --config perceiver") <= 1
    for run in summary["runs"]:
        assert run["threads"] == RUN_THREADS  # pinned, whatever this machine's cores
    assert summary["environment"]["threads"] == f"{RUN_THREADS} per run (pinned)"
    rebuilt = runner.invoke(app, ["report", str(out)])
    assert rebuilt.exit_code in (0, 1), rebuilt.output
    assert (out / "report.md").read_text() == report


def test_gradflow_over_seeds(tmp_path):
    out = tmp_path / "gf"
    r = runner.invoke(app, ["gradflow", "--config", "direct", "--steps", "6", "--seeds", "2", "--out", str(out), *TINY])
    assert r.exit_code in (0, 1), r.output
    summary = json.loads((out / "summary.json").read_text())
    assert [run["name"] for run in summary["runs"]] == ["pixmo_alignment", "pixmo_alignment (seed 1)"]
    assert summary["seeds"]["pixmo_alignment"]["seeds"] == 2


def test_ablation_over_seeds_reports_counts(tmp_path):
    out = tmp_path / "ab"
    r = runner.invoke(app, ["ablate", "--config", "perceiver", "--steps", "6", "--seeds", "2", "--fix", "lr_too_high",
                            "--out", str(out), *TINY])
    assert r.exit_code in (0, 1), r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ablation"]["seeds"] == [0, 1]
    assert {run["name"] for run in summary["runs"]} == {"baseline", "baseline (seed 1)", "fix:lr_too_high",
                                                        "fix:lr_too_high (seed 1)"}
    h = next(h for h in summary["hypotheses"] if h["id"] == "lr_too_high")
    assert [p["seed"] for p in h["seeds"]["per_seed"]] == [0, 1]
    counts = h["seeds"]["counts"]
    assert sum(counts.values()) == 2 and counts[h["verdict"]] * 2 > 2 or h["verdict"] == "inconclusive"
    # each seed's fix run is the one its per-seed verdict read
    fixed = {run["name"]: run for run in summary["runs"]}
    assert h["seeds"]["per_seed"][1]["fix"]["run"] == "fix:lr_too_high (seed 1)"
    replica = fixed["fix:lr_too_high (seed 1)"]["final_loss"]["loss_clip"]
    assert h["seeds"]["per_seed"][1]["fix"]["loss_clip"] == pytest.approx(replica, abs=1e-4)
    report = (out / "report.md").read_text()
    assert "2 seeds (0, 1), every run repeated on each" in report and "**baseline**: learned on" in report
    assert summary["findings"] and all(f["run"] == "baseline" for f in summary["findings"])


def _step(loss: float, chance: float = 4.0):
    from types import SimpleNamespace

    return SimpleNamespace(loss=SimpleNamespace(logged={"loss_clip": loss}, chance=chance))


def _alarm(fid: str, target: str):
    from types import SimpleNamespace

    return SimpleNamespace(finding=SimpleNamespace(id=fid, target=target, severity="error"))


def test_a_replica_settles_as_learned_only_with_the_whole_end_window_at_half_the_bar():
    from types import SimpleNamespace

    from diagnose.lab.runs import SETTLE_MIN_STEPS, SettleCallback

    cb = SettleCallback(SimpleNamespace(alarms=[]))
    for _ in range(SETTLE_MIN_STEPS - 1):
        cb.on_step_end(None, _step(0.1))
    assert not cb.stop_training  # never before SETTLE_MIN_STEPS
    cb.on_step_end(None, _step(2.0))  # 2.0 = 0.5 ln B: learned by the definition, not settled with a margin
    assert not cb.stop_training
    for _ in range(5):
        cb.on_step_end(None, _step(0.9))  # < 0.25 x 4.0 for the whole window (the last 5 of 25)
    assert cb.stop_training and cb.why.startswith("learned")


def test_a_replica_settles_as_failed_only_with_both_live_alarms():
    from types import SimpleNamespace

    from diagnose.lab.runs import SETTLE_MIN_STEPS, SettleCallback

    w = SimpleNamespace(alarms=[_alarm("loss_at_chance", "loss_clip")])
    cb = SettleCallback(w)
    for _ in range(SETTLE_MIN_STEPS + 5):
        cb.on_step_end(None, _step(4.0))
    assert not cb.stop_training  # at chance, but the embeddings did not collapse: it may still leave
    w.alarms.append(_alarm("loss_at_chance", "loss_mrl"))
    w.alarms.append(_alarm("embedding_collapse", "image"))
    cb.on_step_end(None, _step(4.0))
    assert cb.stop_training and cb.why.startswith("failed")


def test_replicas_settle_and_the_first_seed_runs_its_length(tmp_path):
    out = tmp_path / "gf"
    r = runner.invoke(app,
                      ["gradflow", "--config", "perceiver", "--steps", "60", "--seeds", "2", "--out", str(out), *TINY])
    assert r.exit_code in (0, 1), r.output
    first, replica = json.loads((out / "summary.json").read_text())["runs"]
    assert first["steps"] == 60 and "settled" not in first
    if "settled" in replica:  # a settled replica says when and why
        assert replica["steps"] == replica["settled"]["step"] < 60 and replica["settled"]["planned"] == 60
    else:
        assert replica["steps"] == 60

"""`diagnose ablate -- python train.py` over a Hugging Face `Trainer` script using our callback
(tests/lab/scripts/hf_clip_trainer.py: a tiny `CLIPModel` from a config, random weights, CPU, no download;
its logit scale starts at exp(0) = 1). One ablation, 2 fixes x 2 seeds, read by every test here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("accelerate", reason="the Trainer needs accelerate: the [hf] extra (CI installs it)")
pytest.importorskip("transformers", reason="the HF callback needs transformers")

from diagnose.cli.app import app  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "lab" / "scripts" / "hf_clip_trainer.py"
STEPS = 12  # the script's own max_steps is 40: the cap ends it
RUNS = ("baseline", "baseline (seed 1)", "fix:lr_down", "fix:lr_down (seed 1)", "fix:fix_temperature",
        "fix:fix_temperature (seed 1)")


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "ab"
    result = CliRunner().invoke(app, ["ablate", "--quiet", "--out", str(out), "--seeds", "2", "--steps", str(STEPS),
                                      "--workers", "2", "--fix", "lr_down", "--fix", "fix_temperature", "--",
                                      sys.executable, str(SCRIPT), "--logit-scale", "0"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "summary.json").read_text())


def records(out: Path, run: str, metric: str) -> pd.DataFrame:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in run)
    r = pd.read_csv(out / "runs" / slug / "records.csv.gz")
    return r[r["metric"] == metric]


def first_step(out: Path, run: str, metric: str) -> pd.Series:
    r = records(out, run, metric)
    r = r[(r["probe"] == "gradient_flow") & (r["step"] == r["step"].min())]
    return r.set_index("target")["value"]


def test_a_verdict_per_fix_and_seed(ablation):
    _, summary = ablation
    hyps = {h["id"]: h for h in summary["hypotheses"]}
    assert list(hyps) == ["lr_down", "fix_temperature"]
    assert summary["script_ablation"]["failed_runs"] == {}
    for h in hyps.values():
        assert h["verdict"] in ("confirmed", "refuted", "inconclusive"), h["summary"]
        assert [d["seed"] for d in h["per_seed"]] == [0, 1]
        for d in h["per_seed"]:
            assert d["verdict"] in ("confirmed", "refuted", "inconclusive"), d
            assert 0 < d["baseline"]["loss_over_lnB"] < 2 and 0 < d["fix"]["loss_over_lnB"] < 2
            assert d["applied"], d  # what the fix did in that run


def test_the_step_cap_ends_train_through_the_trainers_own_stop(ablation):
    """N observed steps, and the Trainer's end of training ran: the callback's retrieval_fn, called only at
    on_train_end, measured held-out R@1 in every run (a stop raised inside the step skips it)."""
    out, summary = ablation
    for name in RUNS:
        run = json.loads((out / "runs" / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                          / "summary.json").read_text())["runs"][0]
        assert run["steps"] == STEPS, name
        assert run["retrieval"].get("r@1") is not None, (name, run.get("retrieval"))
        assert records(out, name, "update_to_param")["step"].max() < STEPS


def test_the_fixes_act_on_the_objects_the_trainer_built(ablation):
    out, _ = ablation
    for seed in ("", " (seed 1)"):
        # lr_down: the Trainer's own AdamW steps at a tenth of its lr. Step 1 is the same step in both runs
        # (same seed: same init and batch), and Adam's first update is lr x sign-like: each tensor moves 0.1x
        ratio = (first_step(out, "fix:lr_down" + seed, "update_to_param")
                 / first_step(out, "baseline" + seed, "update_to_param")).dropna()
        ratio = ratio[ratio.abs() != float("inf")]
        assert len(ratio) >= 10 and ratio.between(0.098, 0.102).all(), ratio.describe()
        # fix_temperature: the logit scale the model's logits carry is held at 14.29 from the second step on
        scale = records(out, "fix:fix_temperature" + seed, "logit_scale").sort_values("step")["value"]
        base = records(out, "baseline" + seed, "logit_scale")["value"]
        assert scale.iloc[0] == pytest.approx(1.0, rel=1e-3) and base.max() < 1.5
        assert scale.iloc[1:].tolist() == pytest.approx([1 / 0.07] * (len(scale) - 1), rel=1e-4)


def test_seed_1_is_another_run_of_the_same_script(ablation):
    """transformers' set_seed (the script's and TrainingArguments.seed's) reaches the shifted seeding: seed 1's
    first gradients (its init and first batch) differ in every tensor; two runs of seed 0 have the same ones."""
    out, _ = ablation
    grads = {run: first_step(out, run, "grad_norm") for run in ("baseline", "fix:lr_down", "baseline (seed 1)")}
    assert grads["baseline"].tolist() == pytest.approx(grads["fix:lr_down"].tolist(), rel=1e-6)
    change = ((grads["baseline"] - grads["baseline (seed 1)"]).abs() / grads["baseline"].abs()).dropna()
    assert len(change) >= 10 and (change > 0.01).all(), change.describe()

import json
import re

from typer.testing import CliRunner

from diagnose.cli import app

runner = CliRunner()
TINY = ["--scale", "tiny", "--steps", "12", "--quiet", "--set", "dataset.num_train=192", "--set", "dataset.num_val=32",
        "--set", "dataset.batch_size=16"]


def test_compare_writes_a_complete_report_and_report_rebuilds_it(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    gh = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(gh))
    # an ablation written into the same run directory (diagnose ablate --out DIR/ablation) is linked
    (out / "ablation").mkdir(parents=True)
    (out / "ablation" / "report.md").write_text("# Ablation: perceiver_mrl_alignment\n")
    result = runner.invoke(app,
                           ["compare", "perceiver", "direct", "--out", str(out), *TINY, "--seeds", "1", "--fail-on",
                            "error"])
    summary = json.loads((out / "summary.json").read_text())
    errors = [f for f in summary["findings"] if f["severity"] == "error"]
    assert result.exit_code == (1 if errors else 0), result.output
    assert {"runs", "findings", "hypotheses"} <= set(summary)
    assert [r["name"] for r in summary["runs"]] == ["perceiver_mrl_alignment", "pixmo_alignment"]
    for run in summary["runs"]:
        assert {"name", "config", "scale", "steps", "batch_size", "chance_loss", "final_loss", "retrieval",
                "verdict"} <= set(run)
        assert {"r@1", "r@5", "r@10", "chance@1"} <= set(run["retrieval"])
        assert run["scale"] == "tiny" and run["steps"] == 12 and run["batch_size"] == 16
    for f in summary["findings"]:
        assert {"id", "severity", "run", "evidence", "message"} <= set(f)
        assert f["evidence"], f["id"]
    report = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(links) >= 6
    for link in links:
        assert (out / link).is_file(), link
    assert report.startswith("# Diagnosis: perceiver_mrl_alignment vs pixmo_alignment")
    assert "ln(B) = 2.7726" in report  # batch 16
    assert "diagnose compare perceiver direct" in report  # ends with the command that reproduces it
    assert gh.read_text().strip() == report.strip()
    assert summary["ablation_report"] == "ablation/report.md"
    assert "](ablation/report.md)" in report
    # a looser gate turns the same findings into exit 1 when any warning exists
    rebuilt = runner.invoke(app, ["report", str(out), "--fail-on", "warning"])
    warnings = [f for f in summary["findings"] if f["severity"] in ("warning", "error")]
    assert rebuilt.exit_code == (1 if warnings else 0)
    assert (out / "report.md").read_text() == report


def test_report_on_a_non_run_directory_is_exit_2(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a run directory" in result.stderr


def test_gradflow_from_a_checkpoint_and_mismatched_checkpoint(tmp_path):
    train = runner.invoke(app,
                          ["train", "--config", "direct", "--out", str(tmp_path / "t"), "--scale", "tiny", "--steps",
                           "2",
                                "--quiet", "--set", "dataset.num_train=32", "--set", "dataset.num_val=16", "--set",
                                "dataset.batch_size=16"])
    assert train.exit_code == 0, train.output
    ok = runner.invoke(app,
                       ["gradflow", "--config", "direct", "--checkpoint", str(tmp_path / "t" / "model.safetensors"),
                             "--out", str(tmp_path / "g"), *TINY, "--fail-on", "error"])
    assert ok.exit_code in (0, 1), ok.output
    assert (tmp_path / "g" / "report.md").is_file()
    bad = runner.invoke(app,
                        ["gradflow", "--config", "perceiver", "--checkpoint", str(tmp_path / "t" / "model.safetensors"),
                              "--out", str(tmp_path / "b"), *TINY])
    assert bad.exit_code == 2
    assert "checkpoint does not match the model" in bad.stderr and "missing vision.final_projector" in bad.stderr
    assert not (tmp_path / "b").exists()


def _seed_runs(config: str, first_causes: list[list[str]], losses: list[float]) -> tuple[list[dict], list[dict]]:
    """Runs of one config over seeds 0.. and their findings: each seed's causes, each supported by one finding."""
    runs, findings = [], []
    for seed, (causes, loss) in enumerate(zip(first_causes, losses)):
        name = config if seed == 0 else f"{config} (seed {seed})"
        learned = loss < 2.0
        runs.append({"name": name, "config": "perceiver" if config.startswith("perceiver") else "direct",
                     "scale": "small", "seed": seed, "steps": 150, "batch_size": 64, "chance_loss": 4.1589,
                     "final_loss": {"loss_clip": loss}, "retrieval": {"r@1": 0.004 if not learned else 1.0,
                                                                     "chance@1": 0.001},
                     "verdict": {"label": "learned" if learned else "did not learn (loss at chance)",
                                 "learned": learned, "loss_over_chance": loss / 4.1589},
                     "root_causes": [{"cause": c, "title": c.replace("_", " "), "tier": 2, "severity": "warning",
                                      "findings": [f"{c}_finding"], "role": "measured"} for c in causes]})
        findings += [{"id": f"{c}_finding", "severity": "warning", "run": name, "target": "",
                      "evidence": {"step": 0, "ratio": 0.3 + 0.01 * seed, "flag": True}, "message": "m"}
                     for c in causes]
        if not learned:
            findings.append({"id": "loss_at_chance", "severity": "error", "run": name, "target": "loss_clip",
                             "evidence": {"loss_mean": loss, "chance_ln_B": 4.1589}, "message": "m"})
    return runs, findings


def test_a_seeded_compare_report_leads_with_one_answer_per_config_and_one_next_line():
    from diagnose.core.seed_counts import seed_section
    from reports.markdown import render

    p_runs, p_found = _seed_runs("perceiver_mrl_alignment",
                                 [["learning_rate_too_high", "embedding_collapse"], ["learning_rate_too_high"],
                                  ["learning_rate_too_high", "shared_input_component"]], [4.17, 4.19, 4.18])
    d_runs, d_found = _seed_runs("pixmo_alignment", [[], [], []], [0.02, 0.03, 0.016])
    runs = p_runs + d_runs
    groups = {"perceiver_mrl_alignment": [r["name"] for r in p_runs], "pixmo_alignment": [r["name"] for r in d_runs]}
    summary = {"runs": runs, "findings": p_found + d_found, "seeds": seed_section(runs, groups, p_found + d_found)}
    report = render(summary, [])
    assert report.startswith("# Diagnosis: perceiver_mrl_alignment vs pixmo_alignment (3 seeds each)\n")
    answer = report[report.index("## Answer across seeds"):report.index("## Verdict")]
    assert "**perceiver_mrl_alignment: learned on 0/3 seeds** (did not learn (loss at chance) on 3)" in answer
    assert "**pixmo_alignment: learned on 3/3 seeds**" in answer
    # the cause on every seed, with the spread of its key number; causes of one seed only stay per seed
    assert "**learning_rate_too_high** (3/3 seeds, first on 3)" in answer
    assert "`learning_rate_too_high_finding` on 3/3 (ratio 0.300-0.320)" in answer
    assert "embedding_collapse" not in answer and "shared_input_component" not in answer
    assert "`loss_at_chance` 3/3 (loss_mean 4.170-4.190, chance_ln_B 4.159)" in answer
    assert report.count("Next: ") == 1 and report.count("`diagnose ablate --config perceiver`") == 1
    assert report.index("Next: ") < report.index("## Verdict")


def test_key_numbers_skip_constants_and_read_the_top_of_a_ranked_table():
    from diagnose.core.seed_counts import consensus

    runs = [{"name": f"r{s}", "root_causes": [{"cause": "learning_rate_too_high", "findings": ["update_ratio_high"]}]}
            for s in range(3)]
    rows = [{"label": "at chance", "loss_over_lnB": 1.0, "r@1": None, "chance@1": None} for _ in range(3)]
    findings = [{"id": "update_ratio_high", "severity": "warning", "run": f"r{s}",
                 "evidence": {"threshold": 0.1, "layers": {"proj": {"peak": 0.3 + s / 10, "at_step": 0},
                                                           "mlp": {"peak": 0.2, "at_step": 3}},
                              "layers_above": 8 + s}} for s in range(3)]
    cause, = consensus(runs, rows, findings)["causes"]
    assert cause["findings"]["update_ratio_high"]["numbers"] == {"layers.peak max": [0.3, 0.5], "layers_above": [8, 10]}

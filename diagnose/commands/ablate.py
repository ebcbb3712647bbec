"""`diagnose ablate`: every hypothesis tested by changing one thing at a time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..ablation import run_ablation
from ..console import console
from ..options import ConfigOpt, DeviceOpt, FailOnOpt, OutOpt, QuietOpt, ScaleOpt, SeedOpt, SetOpt, StepsOpt, check_fail_on, check_out
from ..rundir import write_run_dir
from ..runs import command_line, environment, resolve_config

DEFAULT_STEPS = 80  # the seed's failure shows within ~20 steps; 80 lets a healthy run clear the margin

WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Processes running ablation runs in parallel (capped at the CPU count).")]
FixOpt = Annotated[Optional[list[str]], typer.Option("--fix", help="Test only these hypotheses (repeatable); default: all that apply.")]


def ablate_command(
    config: ConfigOpt,
    fix: FixOpt = None,
    steps: StepsOpt = None,
    scale: ScaleOpt = "small",
    seed: SeedOpt = None,
    device: DeviceOpt = "cpu",
    out: OutOpt = None,
    set_: SetOpt = None,
    fail_on: FailOnOpt = "error",
    workers: WorkersOpt = 2,
    quiet: QuietOpt = False,
) -> None:
    """Baseline, each fix alone, all fixes together; verdicts with the numbers that decided them."""
    check_fail_on(fail_on)
    cfg = resolve_config(config, set_, scale, seed, quiet)
    steps = steps or DEFAULT_STEPS
    out = out or Path("runs") / f"ablate-{cfg.name}-{cfg.scale}"
    check_out(out)

    def note(name: str) -> None:
        if not quiet:
            console.print(f"run {name} ({steps} steps, scale {cfg.scale})", markup=False)

    ab = run_ablation(cfg, steps, device, only=fix, progress=note, workers=min(workers, os.cpu_count() or 1))
    summary = ab.summary
    summary.command, summary.environment = command_line(), environment()
    write_run_dir(out, summary, ab.records, title=f"Ablation: {cfg.name}")
    for h in summary.hypotheses:
        console.print(f"{h['verdict']:>12}  {h['id']}: {h['summary'][:160]}", markup=False)
    search = summary.sections["ablation"]["minimal_set_search"]
    if search.get("needed"):
        console.print(f"minimal fix set (greedy): {search['set']} learned={search['learned']} ({search['runs']} extra runs)")
    console.print(f"report: {out / 'report.md'}", markup=False)
    # exit code: the baseline's findings decide, as for gradflow
    raise typer.Exit(summary.exit_code(fail_on))

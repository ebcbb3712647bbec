"""`diagnose ablate`: every hypothesis tested by changing one thing at a time."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ...core.errors import ConfigError
from ...core.provenance import command_line, environment
from ..console import console, fail, live_runs, reporting
from ..options import (
    EXIT_INCOMPLETE,
    AblationWorkersOpt,
    CpusPerRunOpt,
    DeviceOpt,
    ExecutorOpt,
    FailOnOpt,
    FixOpt,
    GpusPerRunOpt,
    ListFixesOpt,
    MaxFixesOpt,
    OptionalConfigOpt,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    ScaleOpt,
    ScriptArg,
    SeedOpt,
    SeedsOpt,
    SetOpt,
    StepsOpt,
    TimeoutOpt,
    VariantOpt,
    check_fail_on,
    check_out,
    make_run_executor,
)

DEFAULT_SEEDS = 3  # every run on 3 seeds, replicas settled early (~4 min at the small scale on 2 cores)
DEFAULT_STEPS = 80  # the seed's failure shows within ~20 steps; 80 lets a healthy run clear the margin


def ablate_command(
    script: ScriptArg = None,
    config: OptionalConfigOpt = None,
    fix: FixOpt = None,
    steps: StepsOpt = None,
    scale: ScaleOpt = "small",
    seed: SeedOpt = None,
    device: DeviceOpt = "cpu",
    out: OutOpt = None,
    set_: SetOpt = None,
    fail_on: FailOnOpt = "error",
    seeds: SeedsOpt = DEFAULT_SEEDS,
    workers: AblationWorkersOpt = 2,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    cpus_per_run: CpusPerRunOpt = 1,
    gpus_per_run: GpusPerRunOpt = 0,
    quiet: QuietOpt = False,
    variant: VariantOpt = None,
    list_fixes: ListFixesOpt = False,
    max_fixes: MaxFixesOpt = 5,
    timeout: TimeoutOpt = None,
) -> None:
    """Baseline, each fix alone, all fixes together; verdicts with the numbers that decided them.

    With `-- python train.py [args]` instead of --config: your own script (which opens diagnose.watch),
    run once per fix and seed; the fixes act through the watch, the script does not change."""
    # over 60 lines: the typer signature (one line per option) is a third of it; the body is one sequence
    check_fail_on(fail_on)
    from .ablate_script import ablate_script, print_fixes

    if list_fixes:
        print_fixes()
        raise typer.Exit(0)
    if script:
        if config:
            raise ConfigError("--config and a script after `--` were both given: ablate one or the other")
        given = [o for o, v in (("--set", set_), ("--seed", seed is not None), ("--scale", scale != "small"),
                                ("--device", device != "cpu"), ("--gpus-per-run", gpus_per_run)) if v]
        if given:
            raise ConfigError(f"{given[0]} applies to a reference config (--config), not to your script: pass your "
                              "script's own options after `--`")
        ablate_script(script, fix, variant, steps, seeds, out, executor, workers, ray_address, cpus_per_run,
                      max_fixes, timeout, quiet)
    if not config:
        raise ConfigError("diagnose ablate: expected --config NAME (a reference config) or your script after `--` "
                          "(diagnose ablate -- python train.py)")
    if variant:
        raise ConfigError("--variant changes a script's arguments: it needs a script after `--`")
    # torch and reference_models: only when a command trains
    from ...lab.ablation import BaselineFailed, run_ablation
    from ...lab.executors import Failed
    from ...lab.runs import resolve_config
    from ...lab.seeds import seed_list

    cfg = resolve_config(config, set_, scale, seed, **reporting(quiet))
    steps = steps or DEFAULT_STEPS
    out = out or Path("runs") / f"ablate-{cfg.name}-{cfg.scale}"
    check_out(out)

    def note(name: str, result) -> None:
        if live is not None:
            live.finished(name)
        if isinstance(result, Failed):
            console.print(f"run {name}: FAILED: {result.error}", markup=False)
        elif not quiet:
            v = result["verdict"]
            console.print(f"run {name}: {v['label']} (CLIP loss "
                          f"{result['final_loss'].get('loss_clip', float('nan')):.3f} vs "
                          f"ln(B) {result['chance_loss']:.3f}; {steps} steps, scale {cfg.scale})", markup=False)

    if not quiet:
        console.print(f"ablation of {cfg.name}: runs on executor {executor}", markup=False)
    with make_run_executor(executor, min(workers, os.cpu_count() or 1), device, ray_address, cpus_per_run,
                           gpus_per_run) as ex, live_runs(quiet) as live:  # bars and alarms as the runs go
        try:
            ab = run_ablation(cfg, steps, device, only=fix, progress=note, executor=ex,
                              seeds=seed_list(cfg.seed, seeds))
        except BaselineFailed as exc:
            fail(f"{exc}; nothing written")
            raise typer.Exit(EXIT_INCOMPLETE) from None
    summary = ab.summary
    summary.command, summary.environment = command_line(), environment()
    from ...engine.rundir import write_run_dir  # pandas and the report writer: not for --help

    write_run_dir(out, summary, ab.records, title=f"Ablation: {cfg.name}")
    for h in summary.hypotheses:
        console.print(f"{h['verdict']:>12}  {h['id']}: {h['summary'][:160]}", markup=False)
    search = summary.sections["ablation"]["minimal_set_search"]
    if search.get("needed"):
        console.print(f"minimal fix set (greedy): {search['set']} learned={search['learned']} ({search['runs']} "
                      "extra runs)")
    console.print(f"report: {out / 'report.md'}", markup=False)
    failed = summary.sections["ablation"]["failed_runs"]
    if failed:  # the report is written and says which runs failed; the exit code says it is incomplete
        fail(f"ablation incomplete: {len(failed)} run(s) failed ({', '.join(failed)}); see {out / 'report.md'}")
        raise typer.Exit(EXIT_INCOMPLETE)
    # exit code: the baseline's findings decide, as for gradflow
    raise typer.Exit(summary.exit_code(fail_on))

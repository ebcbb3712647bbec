"""`diagnose gradflow`, `diagnose compare`, `diagnose report`: instrumented runs and their reports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..console import console, fail, live_runs, reporting
from ..options import (
    EXIT_INCOMPLETE,
    CheckpointOpt,
    ConfigOpt,
    CpusPerRunOpt,
    DeviceOpt,
    ExecutorOpt,
    FailOnOpt,
    GpusPerRunOpt,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    ScaleOpt,
    SeedOpt,
    SeedsOpt,
    SetOpt,
    StepsOpt,
    WorkersOpt,
    check_fail_on,
    check_not_distributed,
    check_out,
    default_workers,
    make_run_executor,
)
from .offline_report import print_root_causes

if TYPE_CHECKING:
    from ...core.summary import Summary

# gradflow and compare train: they import torch, `reference_models` and `diagnose.lab` when they run, so
# that `diagnose report` (and `diagnose --help`) load none of them; pandas and the run directory's writer
# (`diagnose.engine.rundir`) are imported by the commands that write one, so `--help` loads neither

DEFAULT_STEPS = 150  # enough for the direct model to leave ln(B) far behind at the small scale
DEFAULT_SEEDS = 3  # compare: every config on 3 seeds, replicas settled early (~1 min at the small scale on 2 cores)


def _print_verdicts(summary: Summary, out: Path) -> None:
    """Verdict per run, then each run's ranked root causes, then the findings."""
    from reports.markdown import verdict_line

    data = summary.to_dict()
    for run in data["runs"]:
        console.print(verdict_line(run).replace("**", ""), markup=False)
    print_root_causes(data["runs"])
    counts = summary.counts()
    console.print(f"findings: {counts['error']} error, {counts['warning']} warning, {counts['info']} info")
    for f in data["findings"]:
        if f["severity"] != "info":
            console.print(f"  [{f['severity']}] {f['run']}: "
                          f"{f['id']}{' (' + f['target'] + ')' if f.get('target') else ''}", markup=False)
    console.print(f"report: {out / 'report.md'}", markup=False)


def _instrumented(cfg, steps, device, quiet, label, checkpoint=None):
    """One run in this process: its progress bar and alarms live on the console (`live_runs`)."""
    from ...lab.runs import model_from_checkpoint, run_instrumented

    model = model_from_checkpoint(cfg, checkpoint) if checkpoint is not None else None
    with live_runs(quiet):
        return run_instrumented(cfg, steps, device, name=label, model=model)


def _seeded(configs, seeds: int, steps: int, device: str, quiet: bool, ex, checkpoint=None) -> tuple[Summary, object]:
    """Every config over `seeds` seeds on the executor; a failed run leaves the comparison without an answer."""
    from ...lab.executors import Failed
    from ...lab.seeds import run_seeded, seed_list

    def done(name, result) -> None:
        if live is not None:
            live.finished(name)
        if isinstance(result, Failed):
            console.print(f"run {name}: FAILED: {result.error}", markup=False)
        elif not quiet:
            console.print(f"run {name}: {result[0]['verdict']['label']}", markup=False)

    first = configs[0][0].seed
    with live_runs(quiet) as live:  # every run's bar and alarms, from the workers too (diagnose.lab.live)
        summary, records, failed = run_seeded(configs, seed_list(first, seeds), steps, device, ex, done,
                                              str(checkpoint) if checkpoint else None)
    if failed:
        fail("; ".join(f"run {n} failed: {e}" for n, e in failed.items()) + "; nothing written")
        raise typer.Exit(EXIT_INCOMPLETE)
    from ...core.seed_counts import count_line

    for label, group in summary.sections.get("seeds", {}).items():
        console.print(count_line(label, group), markup=False)
    return summary, records


def _in_process(executor: str, workers: int, seeds: int, ray_address, gpus_per_run) -> bool:
    """One seed, local, one worker: run here with progress bars (and under torchrun)."""
    return executor == "local" and workers == 1 and seeds == 1 and not (ray_address or gpus_per_run)


def gradflow_command(
    config: ConfigOpt,
    checkpoint: CheckpointOpt = None,
    steps: StepsOpt = None,
    scale: ScaleOpt = "small",
    seed: SeedOpt = None,
    device: DeviceOpt = "cpu",
    out: OutOpt = None,
    set_: SetOpt = None,
    fail_on: FailOnOpt = "error",
    seeds: SeedsOpt = 1,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    cpus_per_run: CpusPerRunOpt = 1,
    gpus_per_run: GpusPerRunOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train with every probe attached; write findings, plots and a root-cause report."""
    check_fail_on(fail_on)
    from ...engine.ranks import agree_exit, is_writer
    from ...lab.runs import instrumented_summary, resolve_config

    cfg = resolve_config(config, set_, scale, seed, **reporting(quiet))
    out = out or Path("runs") / f"gradflow-{cfg.name}-{cfg.scale}"
    check_out(out)
    steps = steps or DEFAULT_STEPS
    workers = default_workers(workers, seeds)
    if _in_process(executor, workers, seeds, ray_address, gpus_per_run):
        run, records = _instrumented(cfg, steps, device, quiet or not is_writer(), cfg.name, checkpoint)
        summary, records = instrumented_summary([(run, records)])
    else:
        check_not_distributed("--seeds/--workers/--executor")
        with make_run_executor(executor, workers, device, ray_address, cpus_per_run, gpus_per_run) as ex:
            summary, records = _seeded([(cfg, cfg.name)], seeds, steps, device, quiet, ex, checkpoint)
    if is_writer():  # under torchrun rank 0 alone writes and prints; every rank exits with its code
        from ...engine.rundir import write_run_dir

        write_run_dir(out, summary, records)
        _print_verdicts(summary, out)
    raise typer.Exit(agree_exit(summary.exit_code(fail_on)))


def compare_command(
    a: Annotated[str, typer.Argument(help="First config (alias, bundled name, or YAML path).")],
    b: Annotated[str, typer.Argument(help="Second config.")],
    steps: StepsOpt = None,
    scale: ScaleOpt = "small",
    seed: SeedOpt = None,
    device: DeviceOpt = "cpu",
    out: OutOpt = None,
    set_: SetOpt = None,
    fail_on: FailOnOpt = "error",
    seeds: SeedsOpt = DEFAULT_SEEDS,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    cpus_per_run: CpusPerRunOpt = 1,
    gpus_per_run: GpusPerRunOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run two configs on identical data and seed, side by side, and report both."""
    check_fail_on(fail_on)
    from ...lab.runs import instrumented_summary, resolve_config

    cfg_a = resolve_config(a, set_, scale, seed, **reporting(quiet))
    cfg_b = resolve_config(b, set_, scale, seed if seed is not None else cfg_a.seed, **reporting(quiet))
    cfg_b.seed = cfg_a.seed  # identical data and init seed
    name_a, name_b = cfg_a.name, cfg_b.name if cfg_b.name != cfg_a.name else f"{cfg_b.name}-b"
    steps = steps or DEFAULT_STEPS
    out = out or Path("runs") / f"compare-{name_a}-{name_b}-{cfg_a.scale}"
    check_out(out)
    workers = default_workers(workers, seeds)
    if _in_process(executor, workers, seeds, ray_address, gpus_per_run):  # with progress bars
        runs = [_instrumented(cfg_a, steps, device, quiet, name_a), _instrumented(cfg_b, steps, device, quiet, name_b)]
        summary, records = instrumented_summary(runs)
    else:
        with make_run_executor(executor, workers, device, ray_address, cpus_per_run, gpus_per_run) as ex:
            summary, records = _seeded([(cfg_a, name_a), (cfg_b, name_b)], seeds, steps, device, quiet, ex)
    if (out / "ablation" / "report.md").is_file():
        summary.sections["ablation_report"] = "ablation/report.md"
    from ...engine.rundir import write_run_dir

    write_run_dir(out, summary, records)
    _print_verdicts(summary, out)
    raise typer.Exit(summary.exit_code(fail_on))


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by gradflow/compare/ablate.")],
    fail_on: FailOnOpt = "error",
) -> None:
    """Re-render a saved run directory (findings, plots, report.md) from its records, without re-running."""
    check_fail_on(fail_on)
    check_out(run_dir, "run directory")
    from ...engine.plots_child import LOG_CURVES
    from ...engine.rundir import rebuild

    if (run_dir / LOG_CURVES).is_file():  # written by diagnose logs: its plot drawn from the saved curves
        _report_logs(run_dir, fail_on)

    summary, _ = rebuild(run_dir)
    _print_verdicts(summary, run_dir)
    raise typer.Exit(summary.exit_code(fail_on))


def _report_logs(run_dir: Path, fail_on: str) -> None:
    import json

    from ...core.errors import ConfigError
    from ...core.files import atomic_write_bytes
    from ...core.summary import Summary
    from ...engine.plots_child import LOG_CURVES, render_logs

    try:
        data = json.loads((run_dir / "summary.json").read_text())
        summary = Summary.from_dict(data, str(run_dir / "summary.json"))
        figures, text = render_logs(data, (run_dir / LOG_CURVES).read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run_dir}: cannot redraw the report of diagnose logs ({exc.__class__.__name__}); "
                          "expected the summary.json and log_curves.csv it wrote") from None
    for name, _, png in figures:
        atomic_write_bytes(run_dir / name, png)
    atomic_write_bytes(run_dir / "report.md", text.encode())  # last: it names only files already there
    console.print(f"report: {run_dir / 'report.md'}", markup=False)
    raise typer.Exit(summary.exit_code(fail_on))

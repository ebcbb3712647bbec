"""`diagnose logs`: findings from a training log (text, CSV, JSON lines, trainer_state.json, TensorBoard)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...core.provenance import command_line, environment
from ..console import console
from ..options import FailOnOpt, OutOpt, QuietOpt, check_fail_on, check_out
from .offline_report import print_findings, print_root_causes, write_report

# the readers' names (diagnose.core.logs.FORMATS, checked equal by tests/test_layers.py): the readers and
# pandas are imported when the command runs, not when `diagnose --help` declares its options
FORMATS = ("auto", "tensorboard", "trainer_state", "jsonl", "csv", "text")


def _print_runs(runs: list[dict], fmt: str) -> None:
    from rich.table import Table

    table = Table(title=f"runs in the log ({fmt})")
    for col in ("run", "last step", "train losses", "val losses", "recall"):
        table.add_column(col)
    for r in runs:
        table.add_row(r["name"], str(r["steps"]),
                      ", ".join(f"{k} {v:.4f}" for k, v in r["final_loss"].items()),
                      ", ".join(f"{k} {v:.4f}" for k, v in r.get("final_val_loss", {}).items()),
                      ", ".join(f"{k.upper()} {v:.2%}" for k, v in r["retrieval"].items()))
    console.print(table)


def logs_command(
    file: Annotated[Path,
                    typer.Argument(help="Training log: plain text (the seed's format), CSV (Lightning metrics.csv, "
                                        "W&B export), JSON lines, HF trainer_state.json, or a TensorBoard "
                                        "event file / log directory.")],
    batch_size: Annotated[Optional[int],
                          typer.Option("--batch-size", help="Configured batch size: chance is ln(B) per rank.")] = None,
    weights: Annotated[Optional[str],
                       typer.Option("--weights", help="Loss weights to check, e.g. clip=0.25,mrl=1.0 "
                                                      "(solved for by least squares when not given).")] = None,
    eval_size: Annotated[Optional[int],
                         typer.Option("--eval-size", help="Evaluation pairs behind the logged recall: "
                                                          "a single R@K is judged against chance K/N.")] = None,
    fmt: Annotated[str, typer.Option("--format", help=f"Log format: {', '.join(FORMATS)}.")] = "auto",
    out: OutOpt = None,
    fail_on: FailOnOpt = "error",
    quiet: QuietOpt = False,  # accepted like every command's common options; `logs` draws no progress bars
) -> None:
    """Diagnose from a training log: flat or at-chance losses, identical components, loss weights, random recall."""
    check_fail_on(fail_on)
    check_out(out)
    from ...core.logs import parse_weights, read_log
    from ...core.logs.diagnosis import analyse
    from ...core.summary import Summary

    given = parse_weights(weights)
    parsed = read_log(file, fmt)
    runs, findings = analyse(parsed, batch_size, given, eval_size)
    summary = Summary(runs, findings, command=command_line(), environment=environment(),
                      sections={"log": {"path": str(file), "format": parsed.format, "notes": parsed.notes}})
    data = summary.to_dict()
    _print_runs(data["runs"], parsed.format)
    for note in parsed.notes:
        console.print(f"note: {note}", markup=False)
    print_root_causes(data["runs"])
    print_findings(data["findings"])
    if out is not None:
        _write(out, data, parsed.frame)
        console.print(f"report: {out / 'report.md'}", markup=False)
    raise typer.Exit(summary.exit_code(fail_on))


def _write(out: Path, data: dict, frame) -> None:
    """The report and summary.json first; the loss plot drawn by a child process from the curves saved beside them
    (`diagnose.engine.plots_child`: matplotlib's import and the drawing do not hold the command)."""
    from reports.offline import logs_curves, logs_markdown

    from ...engine import plots_child

    curves = logs_curves(frame, data["runs"])
    files = {plots_child.LOG_CURVES: curves.to_csv(index=False).encode()} if curves is not None else {}
    rebuild = f"`diagnose report {out}` draws it"
    note = (f"Plot: drawing in the background (a separate process writes {plots_child.LOG_FIGURE[0]} into this "
            f"directory, then this report with it); if it does not appear, {rebuild}.")
    write_report(out, data, lambda d, plots: logs_markdown(d, plots, note if curves is not None else None), [], files)
    why = plots_child.start(out) if curves is not None else ""
    if why:  # no child process here: the report says how to get the plot instead
        note = f"Plot: not drawn ({why}); {rebuild}."
        write_report(out, data, lambda d, plots: logs_markdown(d, plots, note), [], files)

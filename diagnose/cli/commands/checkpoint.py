"""`diagnose checkpoint`: static analysis of a saved state dict (no training, no data)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ...core.errors import ConfigError
from ...core.provenance import command_line, environment
from ..console import console
from ..options import FailOnOpt, OutOpt, ReferenceConfigOpt, ScaleOpt, SetOpt, check_fail_on
from .offline_report import print_findings, print_root_causes, write_report

if TYPE_CHECKING:
    from ...core.summary import Summary

MAX_TABLE_ROWS = 40  # the console table is cut here; report.md and summary.json list every layer


def _summary(a) -> Summary:
    from ...core.rules import rank_root_causes  # pandas: only when a checkpoint is analysed
    from ...core.summary import RunSummary, Summary

    meta = a.metadata
    findings = [f.to_dict() for f in a.findings]
    run = RunSummary(name=a.name, kind="checkpoint", config=(a.config or {}).get("config") or meta.get("config_name"),
                     scale=(a.config or {}).get("scale") or meta.get("scale"),
                     steps=int(meta["step"]) if str(meta.get("step", "")).isdigit() else None,
                     root_causes=rank_root_causes(findings))
    return Summary([run], findings, command=command_line(), environment=environment(), sections={"checkpoint": {
        "name": a.name, "files": a.files, "metadata": meta, "tensors": len(a.tensors), "parameters": a.parameters,
        "layers": a.layers, "tensor_stats": a.tensors, "latents": a.latents, "logit_scale": a.logit_scale,
        "against": a.against, "config": a.config}})


def _num(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}"


def _print_table(summary: dict) -> None:
    from rich.table import Table

    ck = summary["checkpoint"]
    change = {r["layer"]: r for r in (ck.get("against") or {}).get("layers", [])}
    title = f"{ck['name']} · {ck['tensors']} tensors · {ck['parameters']:,} values"
    if ck.get("against"):
        title += f" · against {Path(ck['against']['path']).name}"
    table = Table(title=title)
    for col, just in (("layer", "left"), ("values", "right"), ("rms", "right"), ("norm", "right"),
                      ("non-finite", "right")):
        table.add_column(col, justify=just)
    if ck.get("against"):
        table.add_column("‖θ−θ₀‖/‖θ₀‖", justify="right")
    layers = ck["layers"]
    if ck.get("against"):  # least changed first: the layers that never learned are the question
        order = {r["layer"]: i for i, r in enumerate(ck["against"]["layers"])}
        layers = sorted(layers, key=lambda row: order.get(row["layer"], len(order)))
    for layer in layers[:MAX_TABLE_ROWS]:
        row = [layer["layer"], f"{layer['numel']:,}", _num(layer["rms"]), _num(layer["norm"]), str(layer["nonfinite"])]
        if ck.get("against"):
            row.append(_num(change.get(layer["layer"], {}).get("rel_change"), 3))
        table.add_row(*row)
    if len(layers) > MAX_TABLE_ROWS:
        table.caption = f"{len(layers) - MAX_TABLE_ROWS} more layers in summary.json (--out)"
    console.print(table)
    if ck.get("latents"):
        lt = Table(title="learned latents / queries")
        for col in ("tensor", "shape", "rms", "std", "cos mean", "cos max", "identical rows", "drift"):
            lt.add_column(col, justify="left" if col == "tensor" else "right")
        for lat in ck["latents"]:
            lt.add_row(lat["name"], str(tuple(lat["shape"])), _num(lat["rms"]), _num(lat["std"]),
                       _num(lat.get("cosine_mean"), 3),
                       _num(lat.get("cosine_max"), 3), str(lat["identical_rows"]), _num(lat.get("drift"), 3))
        console.print(lt)
    if ck.get("logit_scale"):
        ls = ck["logit_scale"]
        console.print(f"{ls['name']} = {ls['value']:.4f} (exp = {_num(ls['exp'])})", markup=False)


def checkpoint_command(
    path: Annotated[Path, typer.Argument(help="safetensors / .pt / .pth / .bin file (read with weights_only=True), "
                                              "or a Hugging Face model directory.")],
    against: Annotated[Optional[Path],
                       typer.Option("--against", help="An earlier checkpoint: relative change per layer.")] = None,
    config: ReferenceConfigOpt = None,
    scale: ScaleOpt = "full",
    set_: SetOpt = None,
    out: OutOpt = None,
    fail_on: FailOnOpt = "error",
) -> None:
    """Static checkpoint analysis: per-layer stats, latents, non-finite values, change vs an earlier checkpoint."""
    check_fail_on(fail_on)
    if set_ and config is None:
        raise ConfigError("--set needs --config (it overrides the reference config)")
    from ...lab.checkpoint_analysis import analyse_checkpoint  # torch and reference_models: only when it runs

    analysis = analyse_checkpoint(path, against, config, list(set_ or []), scale)
    summary = _summary(analysis)
    data = summary.to_dict()
    _print_table(data)
    print_root_causes(data["runs"])
    print_findings(data["findings"])
    if out is not None:
        from reports.offline import checkpoint_figure, checkpoint_markdown  # matplotlib: only for a report

        fig = checkpoint_figure(data)
        figures = [(fig[0], "Relative change per layer" if fig[0] == "layer_change" else "RMS per layer",
                    fig[1])] if fig else []
        write_report(out, data, checkpoint_markdown, figures)
        console.print(f"report: {out / 'report.md'}", markup=False)
    raise typer.Exit(summary.exit_code(fail_on))

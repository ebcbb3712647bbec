"""Reports of the offline commands (`diagnose checkpoint`, `diagnose logs`): pure functions of their
summary dicts -> markdown strings and matplotlib Figures. No I/O: the CLI writes the files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .markdown import _f, counts_line, findings_section, root_causes_section

if TYPE_CHECKING:  # matplotlib: imported by the figures, when they are drawn (`logs` writes its report first)
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plots(plots: list[tuple[str, str]]) -> list[str]:
    lines = []
    if plots:
        lines += ["## Plots", ""]
        for file, caption in plots:
            lines += [f"### {caption}", "", f"![{caption}]({file})", ""]
    return lines


def _tail(summary: dict) -> list[str]:
    return ["## Reproduce", "", "```bash", summary["command"], "```", ""] if summary.get("command") else []


def checkpoint_markdown(summary: dict, plots: list[tuple[str, str]]) -> str:
    ck = summary["checkpoint"]
    lines = [f"# Checkpoint: {ck['name']}", "", f"Files: {', '.join(f'`{f}`' for f in ck['files'])}. "
             f"{ck['tensors']} tensors, {ck['parameters']:,} values.", "", counts_line(summary["findings"]), ""]
    lines += root_causes_section(summary)
    lines += findings_section(summary["findings"])
    lines += _plots(plots)
    lines += ["## Layers", "",
              "| layer | tensors | values | rms | norm | non-finite |"
              + (" change ‖θ−θ₀‖/‖θ₀‖ |" if ck.get("against") else ""),
              "|---|---|---|---|---|---|" + ("---|" if ck.get("against") else "")]
    change = {r["layer"]: r for r in (ck.get("against") or {}).get("layers", [])}
    for layer in ck["layers"]:
        row = (f"| {layer['layer']} | {layer['tensors']} | {layer['numel']} | {_f(layer['rms'])} | "
               f"{_f(layer['norm'])} | "
               f"{layer['nonfinite']} |")
        if ck.get("against"):
            row += f" {_f(change.get(layer['layer'], {}).get('rel_change'))} |"
        lines.append(row)
    lines.append("")
    if ck.get("latents"):
        lines += ["## Latents / queries", "",
                  "| tensor | shape | rms | std | pairwise cosine mean / max | identical rows | drift |",
                  "|---|---|---|---|---|---|---|"]
        for lat in ck["latents"]:
            lines.append(f"| {lat['name']} | {tuple(lat['shape'])} | {_f(lat['rms'])} | {_f(lat['std'])} | "
                         f"{_f(lat.get('cosine_mean'), 3)} / {_f(lat.get('cosine_max'), 3)} | "
                         f"{lat['identical_rows']} | {_f(lat.get('drift'))} |")
        lines.append("")
    return "\n".join(lines + _tail(summary))


def checkpoint_figure(summary: dict) -> tuple[str, Figure] | None:
    ck = summary["checkpoint"]
    against = ck.get("against")
    rows = [r for r in (against or {}).get("layers", []) if r.get("rel_change")] if against else []
    if rows:
        title, xlabel = "Relative change per layer ‖θ−θ₀‖/‖θ₀‖ (log scale)", "relative change"
        values = [(r["layer"], r["rel_change"]) for r in rows]
    else:
        title, values, xlabel = "RMS per layer (log scale)", [(r["layer"],
                                                               r["rms"]) for r in ck["layers"] if r.get("rms")], "rms"
    if not values:
        return None
    values = values[:40]
    fig, ax = _pyplot().subplots(figsize=(7, 0.28 * len(values) + 1.2))
    ax.barh([v[0] for v in values], [v[1] for v in values])
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return ("layer_change" if rows else "layer_rms"), fig


def logs_markdown(summary: dict, plots: list[tuple[str, str]], plots_note: str | None = None) -> str:
    lines = [f"# Training log: {summary['log']['path']}", "", f"Format: {summary['log']['format']}; runs: "
             + ", ".join(r["name"] for r in summary["runs"]) + ".", "", counts_line(summary["findings"]), ""]
    lines += root_causes_section(summary)
    lines += findings_section(summary["findings"])
    lines += _plots(plots) if plots or not plots_note else ["## Plots", "", plots_note, ""]
    lines += ["## Runs", "", "| run | last step | final losses | val losses | recall |", "|---|---|---|---|---|"]
    for r in summary["runs"]:
        fl = ", ".join(f"{k} {_f(v)}" for k, v in r["final_loss"].items())
        vl = ", ".join(f"{k} {_f(v)}" for k, v in r.get("final_val_loss", {}).items())
        rec = ", ".join(f"{k.upper()} {v:.2%}" for k, v in r["retrieval"].items())
        lines.append(f"| {r['name']} | {r['steps']} | {fl} | {vl} | {rec} |")
    lines.append("")
    if summary["log"].get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in summary["log"]["notes"]] + [""]
    return "\n".join(lines + _tail(summary))


def logs_curves(frame, runs: list[dict]):
    """The rows `logs_figure` draws (the loss curves of the runs with more than one logged step), or None."""
    names = [r["name"] for r in runs]
    losses = frame[frame["metric"].str.startswith("loss")]
    multi = [n for n in names if losses[losses["run"] == n]["step"].nunique() > 1]
    if not multi:
        return None
    return losses[losses["run"].isin(multi)][["run", "split", "metric", "step", "value"]]


def logs_figure(frame, runs: list[dict]) -> tuple[str, Figure] | None:
    """Loss curves per run; dashed: ln(candidates) of each at-chance finding or ln(B)."""
    frame = logs_curves(frame, runs)
    if frame is None:
        return None
    multi = list(dict.fromkeys(r["name"] for r in runs if r["name"] in set(frame["run"])))
    fig, axes = _pyplot().subplots(1, len(multi), figsize=(5.2 * len(multi), 3.2), squeeze=False)
    meta = {r["name"]: r for r in runs}
    for ax, name in zip(axes[0], multi):
        d = frame[(frame["run"] == name) & frame["metric"].str.startswith("loss")]
        for (split, metric), g in d.groupby(["split", "metric"]):
            g = g.sort_values("step")
            ax.plot(g["step"], g["value"], label=f"{split} {metric}", lw=1.2)
        chance = meta[name].get("chance_loss")
        if chance:
            ax.axhline(chance, ls="--", c="k", lw=1, label=f"ln B = {chance:.3f}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return "log_losses", fig

"""Plots: pure functions of recorded data (records DataFrame + run summaries) -> matplotlib Figures.

They never compute diagnostics and never write files; the CLI saves what they return. Records carry
a `run` column (one run directory can hold several runs side by side). matplotlib is imported by the
first figure drawn, not by importing this module (a run directory written without plots never loads it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RULE_OF_THUMB_UPDATE = 1e-3  # drawn as a reference line on update/param plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: plots are files, never windows
    import matplotlib.pyplot as plt

    return plt


def _runs(records: pd.DataFrame) -> list[str]:
    return list(pd.unique(records["run"])) if "run" in records else ["run"]  # first-seen order


def _grid(n: int, title: str, height: float = 3.2) -> tuple[Figure, list]:
    fig, axes = _plt().subplots(1, n, figsize=(5.2 * n, height), squeeze=False, sharey=False)
    fig.suptitle(title)
    return fig, list(axes[0])


def _sel(records: pd.DataFrame, run: str, probe: str, metric: str) -> pd.DataFrame:
    r = records[(records["run"] == run)] if "run" in records else records
    return r[(r["probe"] == probe) & (r["metric"] == metric)]


def losses(records: pd.DataFrame, runs: list[dict]) -> Figure:
    """Loss components vs step, with the chance line ln(B) of each run."""
    names = _runs(records)
    fig, axes = _grid(len(names), "Loss components vs step (dashed: chance ln B)")
    meta = {r["name"]: r for r in runs}
    for ax, run in zip(axes, names):
        vals = _sel(records, run, "loss_split", "value")
        for comp, g in vals.groupby("target"):
            g = g.sort_values("step")
            ax.plot(g["step"], g["value"], label=comp, lw=1.2)
        chance = meta.get(run, {}).get("chance_loss")
        if chance is not None:
            ax.axhline(chance, ls="--", c="k", lw=1, label=f"ln B = {chance:.3f}")
        ax.set_title(run)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _per_target(records: pd.DataFrame, probe: str, metric: str, title: str, ylabel: str, log: bool,
                exclude: str | None = None, hline: float | None = None, max_lines: int = 14) -> Figure:
    names = _runs(records)
    fig, axes = _grid(len(names), title, height=3.6)
    for ax, run in zip(axes, names):
        d = _sel(records, run, probe, metric)
        if exclude:
            d = d[~d["target"].str.contains(exclude, regex=True)]
        for tgt in sorted(d["target"].unique())[:max_lines]:
            g = d[d["target"] == tgt].sort_values("step")
            y = g["value"].where(g["value"] > 0) if log else g["value"]
            ax.plot(g["step"], y, label=tgt, lw=1)
        if hline is not None:
            ax.axhline(hline, ls="--", c="k", lw=1)
        if log and len(d) and (d["value"] > 0).any():
            ax.set_yscale("log")
        ax.set_title(run)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if len(d):
            ax.legend(fontsize=6, ncol=1)
    fig.tight_layout()
    return fig


def gradient_flow(records: pd.DataFrame) -> Figure:
    return _per_target(records, "gradient_flow.layer", "grad_norm", "Gradient norm per layer (log)", "grad norm", True)


def update_ratio(records: pd.DataFrame) -> Figure:
    return _per_target(records, "gradient_flow.layer", "update_to_param",
                       "Update / parameter norm per layer per step (dashed: 1e-3 rule of thumb)", "|dW| / |W|", True,
                       hline=RULE_OF_THUMB_UPDATE)


def entropy(records: pd.DataFrame) -> Figure:
    return _per_target(records, "softmax_entropy", "entropy_mean",
                       "Softmax entropy H / ln K (1 = uniform, 0 = one-hot)", "H / ln K", False, exclude=r"\.head\d+$")


def collapse(records: pd.DataFrame) -> Figure:
    return _per_target(records, "collapse", "cosine_mean",
                       "Mean pairwise cosine of embeddings (1 = collapsed)", "mean cosine", False, exclude="~")


def effective_rank(records: pd.DataFrame) -> Figure:
    return _per_target(records, "collapse", "effective_rank_frac",
                       "Effective rank (RankMe) / min(N, D)", "effective rank fraction", False, exclude="~")


def latents(records: pd.DataFrame) -> Figure:
    names = _runs(records)
    fig, axes = _grid(len(names), "Learned latents: rms, drift from init, pairwise cosine")
    for ax, run in zip(axes, names):
        for metric in ("rms", "drift", "cosine_mean"):
            d = _sel(records, run, "latent_stats", metric).sort_values("step")
            for tgt, g in d.groupby("target"):
                ax.plot(g["step"], g["value"], label=f"{metric}", lw=1)
        ax.set_title(run)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no learned latents in this model", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def run_losses_against_chance(runs: list[dict], curves: dict[str, pd.DataFrame],
                              component: str = "loss_clip") -> Figure:
    """One line per run (e.g. ablations): `component` vs step, each run's ln(B) dashed in its colour."""
    fig, ax = _plt().subplots(figsize=(8, 4.2))
    for i, run in enumerate(runs):
        c = f"C{i % 10}"
        d = curves.get(run["name"])
        if d is None or d.empty:
            continue
        ax.plot(d["step"], d["value"], c=c, lw=1.2, label=run["name"])
        if run.get("chance_loss") is not None and not math.isnan(run["chance_loss"]):
            ax.axhline(run["chance_loss"], c=c, ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel(component)
    ax.set_title(f"{component} vs step; dashed: each run's ln(B)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


PLOTS = {
    "losses": ("Loss components vs ln(B)", lambda rec, runs: losses(rec, runs)),
    "gradient_flow": ("Gradient flow per layer", lambda rec, runs: gradient_flow(rec)),
    "update_ratio": ("Update/param per layer", lambda rec, runs: update_ratio(rec)),
    "entropy": ("Attention, pooling and logit entropy", lambda rec, runs: entropy(rec)),
    "collapse": ("Embedding collapse", lambda rec, runs: collapse(rec)),
    "effective_rank": ("Effective rank", lambda rec, runs: effective_rank(rec)),
    "latents": ("Latent stats", lambda rec, runs: latents(rec)),
}


STEMS = ("runs_vs_chance", *PLOTS)  # every file stem render_all can return


def render_all(records: pd.DataFrame, runs: list[dict]) -> dict[str, tuple[str, Figure]]:
    """{file stem: (caption, figure)} for every standard plot; an overlay of all runs' CLIP loss
    against their ln(B) first when there are more than two runs (ablations)."""
    out: dict[str, tuple[str, Figure]] = {}
    suffix = ""
    if len(runs) > 2:
        clip = records[(records["probe"] == "loss_split") & (records["target"] == "loss_clip")
                       & (records["metric"] == "value")]
        curves = {name: g.sort_values("step") for name, g in clip.groupby("run")}
        out["runs_vs_chance"] = ("CLIP loss of every run against its ln(B)", run_losses_against_chance(runs, curves))
        # per-run panels would be unreadable for many runs: keep the baseline's
        first = runs[0]["name"]
        records = records[records["run"] == first]
        runs, suffix = runs[:1], f" ({first})"
    for stem, (caption, make) in PLOTS.items():
        out[stem] = (caption + suffix, make(records, runs))
    return out

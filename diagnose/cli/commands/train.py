"""`diagnose train`: reference training with checkpoints, per-step losses and held-out R@K."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import ConfigError
from ..console import console, progress, reporting
from ..options import ConfigOpt, DeviceOpt, EpochsOpt, OutOpt, QuietOpt, ScaleOpt, SeedOpt, SetOpt, StepsOpt, check_out


def train_command(
    config: ConfigOpt,
    steps: StepsOpt = None,
    epochs: EpochsOpt = None,
    scale: ScaleOpt = "small",
    seed: SeedOpt = None,
    device: DeviceOpt = "cpu",
    out: OutOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the reference model from a config; write losses, checkpoints and retrieval metrics."""
    if steps is not None and epochs is not None:
        raise ConfigError("--steps and --epochs: give one, not both")
    # torch, reference_models and the lab: only when the command runs
    from reference_models.data import build_data
    from reference_models.train import steps_per_epoch

    from ...engine.ranks import is_writer, output_dir
    from ...lab.runs import EpochCheckpoints, ProgressCallback, resolve_config, run_training, save_train_run

    cfg = resolve_config(config, set_, scale, seed, **reporting(quiet))
    out = out or Path("runs") / f"train-{cfg.name}-{cfg.scale}"
    train_src, _ = build_data(cfg, cfg.seed)
    per_epoch = steps_per_epoch(cfg, train_src)
    total = steps or per_epoch * (epochs or cfg.optimization.epochs)
    check_out(out)
    # the whole directory (epoch checkpoints included) appears at the end, or not at all; under
    # torchrun rank 0 alone writes it (the other ranks train into a scratch directory)
    writer = is_writer()
    with output_dir(out) as tmp, progress(f"train {cfg.name} ({cfg.scale})", total, quiet or not writer) as ticker:
        callbacks = [ProgressCallback(ticker), EpochCheckpoints(tmp, cfg)]
        run = run_training(cfg, steps, epochs, device, callbacks)
        summary = save_train_run(tmp, run).to_dict()["runs"][0]
    if not writer:
        return
    from rich.table import Table

    table = Table(title=f"{cfg.name} · scale {cfg.scale} · {summary['steps']} steps · batch {summary['batch_size']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("chance", justify="right")
    for key, value in summary["final_loss"].items():
        table.add_row(f"{key} (last {summary['final_window_steps'][1] - summary['final_window_steps'][0] + 1} steps)",
                      f"{value:.4f}", f"ln(B)={summary['chance_loss']:.4f}" if key.startswith("loss_") else "")
    r = summary["retrieval"]
    for k in (1, 5, 10):
        table.add_row(f"R@{k} (mean of i2t, t2i)", f"{r[f'r@{k}']:.4f}", f"{r[f'chance@{k}']:.4f}")
    table.add_row("image embedding mean cosine", f"{r['image_mean_cosine']:.3f}", "")
    console.print(table)
    console.print(
        f"{cfg.name}: {summary['verdict']['label']} (CLIP loss {summary['final_loss']['loss_clip']:.3f} vs ln(B) "
        f"{summary['chance_loss']:.3f}; "
        f"R@1 {r['r@1']:.4f} vs chance {r['chance@1']:.4f}) in {summary['seconds']:.0f}s -> {out}"
    )

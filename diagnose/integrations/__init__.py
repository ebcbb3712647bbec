"""Adapters that put `diagnose.watch` where users train: Lightning, the Hugging Face `Trainer`, and the
dashboards they already look at (TensorBoard, W&B). One module per integration, each an optional extra
imported only when asked for; importing `diagnose` imports none of them.

    from diagnose.integrations.lightning import DiagnoseCallback          # pip install '.[lightning]'
    from diagnose.integrations.hf import DiagnoseTrainerCallback          # pip install '.[hf]'
    from diagnose.integrations.scalars import TensorBoardSink, WandbSink  # '.[tb]' / '.[wandb]'
"""

from __future__ import annotations


def require(module: str, extra: str, what: str):
    """Import an optional dependency or raise one clear line naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs `{module}`, which is not installed: pip install "
                          f"'alignment-diagnose[{extra}]'") from exc

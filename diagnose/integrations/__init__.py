"""Adapters that put `diagnose.watch` where users train: Lightning, the Hugging Face `Trainer`, and the
dashboards they already look at (TensorBoard, W&B). One module per integration, each an optional extra
imported only when asked for; importing `diagnose` imports none of them.

    from diagnose.integrations.lightning import DiagnoseCallback          # pip install '.[lightning]'
    from diagnose.integrations.hf import DiagnoseTrainerCallback          # pip install '.[hf]'
    from diagnose.integrations.scalars import TensorBoardSink, WandbSink  # '.[tb]' / '.[wandb]'
"""

from __future__ import annotations

from ..core.errors import require  # the one-line error naming the extra to install

__all__ = ["require"]

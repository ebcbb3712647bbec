"""`diagnose`: run, probe and explain vision-to-text alignment training.

The public entry point for your own training loop is `diagnose.watch` (see `diagnose.watch`'s module
docstring); framework adapters and the CLI build on it. Names are imported lazily, so `import diagnose`
stays light and never imports an optional integration.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Alarm", "DiagnoseAlarm", "Watch", "watch"]


def __getattr__(name: str) -> Any:
    if name in ("watch", "Watch", "DiagnoseAlarm"):
        from .engine import watcher as _watch

        return getattr(_watch, name)
    if name == "Alarm":
        from .engine.monitor import Alarm

        return Alarm
    raise AttributeError(f"module 'diagnose' has no attribute {name!r}")

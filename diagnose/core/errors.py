"""The tool's bad-input errors and the import helper for optional packages.

A bad-input error is one line fit for stderr; the CLI prints it and exits 2 (`BAD_INPUT` lists the
types it catches). `reference_models` raises its own `ConfigError` (it never imports `diagnose`);
the CLI treats that one alike.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class ConfigError(ValueError):
    """Bad user input (option, file, key, value). The message is one line, fit for stderr."""


class OutputError(ConfigError):
    """An output could not be written (full disk, read-only, not a directory): one line, exit 2."""


# what the CLI turns into one line and exit 2
BAD_INPUT: tuple[type[Exception], ...] = (ConfigError,)


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional dependency or raise one clear line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs `{module}`, which is not installed: pip install "
                          f"'alignment-diagnose[{extra}]'") from exc

"""Where a report came from: the command that reproduces it and the environment it ran in.

Neither imports anything: the click context is read only when the CLI (typer's click) is loaded, and
torch's thread count only when torch is (a torch-free command such as `diagnose logs` records torch's
installed version without importing it).
"""

from __future__ import annotations

import platform
import shlex
import sys

CLICK_GLOBALS = ("typer._click.globals", "click.globals")  # typer >= 0.2x vendors click as typer._click


def _click_context():
    for name in CLICK_GLOBALS:
        mod = sys.modules.get(name)
        ctx = mod.get_current_context(silent=True) if mod is not None else None
        if ctx is not None:
            return ctx
    return None


def command_line() -> str:
    """The command that reproduces this run, rebuilt from the parsed parameters (so it is exact even
    when invoked programmatically), falling back to sys.argv outside a click context."""
    ctx = _click_context()
    if ctx is None:
        return " ".join(["diagnose", *map(shlex.quote, sys.argv[1:])])
    parts = ["diagnose", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == param.default or value == [] or value is False:
            continue
        if param.param_type_name == "argument":
            parts.append(shlex.quote(str(value)))
            continue
        opt = max(param.opts, key=len)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            parts += [opt] if v is True else [opt, shlex.quote(str(v))]
    return " ".join(parts)


def _installed(package: str) -> str:
    from importlib import metadata  # when a report is written, not when the CLI starts

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    """torch version, Python, machine, and torch's thread count when torch is loaded."""
    torch = sys.modules.get("torch")
    env = {"torch": torch.__version__ if torch is not None else _installed("torch"),
           "python": platform.python_version(), "machine": platform.machine()}
    if torch is not None:
        env["threads"] = str(torch.get_num_threads())
    return env

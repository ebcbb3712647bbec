"""Typer entry point and the exit-code contract of every command.

0 no finding at or above --fail-on, 1 findings at or above it, 2 bad input (ConfigError, a usage
error, an output that cannot be written: one line on stderr), 3 an unexpected exception (one line;
--debug prints the traceback), 130 Ctrl-C (one line saying what was kept). The common options
(--quiet, --debug) are added to every command that does not declare them, and --seed, --device,
--out and GITHUB_STEP_SUMMARY are checked here before a command starts any work.
"""

from __future__ import annotations

import functools
import inspect
import signal
import sys
import traceback
from typing import Any, Callable

import typer
from typer import Abort, Exit
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click as typer._click; older typer uses click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, NoArgsIsHelpError

from ..core.errors import BAD_INPUT
from ..core.staging import committed_dirs
from .commands.ablate import ablate_command
from .commands.checkpoint import checkpoint_command
from .commands.datasignal import datasignal_command
from .commands.instrumented import compare_command, gradflow_command, report_command
from .commands.lint import lint_command
from .commands.logs import logs_command
from .commands.train import train_command
from .console import fail
from .options import DebugOpt, QuietOpt, check_device, check_out, check_seed, check_step_summary

EXIT_BAD_INPUT, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 2, 3, 130
COMMON_OPTIONS = {"quiet": QuietOpt, "debug": DebugOpt}  # accepted by every command


class _OneLineErrors(TyperGroup):
    """Usage errors (a value out of range, a missing option, an unknown command) as one line on
    stderr and exit 2, instead of click's multi-line usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # bare `diagnose`: the help, as before
            exc.show()
            sys.exit(0)
        except ClickException as exc:
            fail(" ".join(exc.format_message().split()))
            sys.exit(EXIT_BAD_INPUT)
        except Abort:  # click's form of Ctrl-C while it parses, before a command (and its guard) runs
            fail("interrupted: no output written")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="diagnose",
    help="Diagnose vision-to-text alignment training failures: run, probe, ablate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
)


def _check_common(kwargs: dict, publishes: bool) -> None:
    """What every command needs before it starts: seed in range, device present, --out writable,
    and, for a command that publishes a report, a usable GITHUB_STEP_SUMMARY."""
    check_seed(kwargs.get("seed"))
    check_device(kwargs.get("device"))
    check_out(kwargs.get("out"))
    if publishes:
        check_step_summary()


def bad_input_types() -> tuple[type[Exception], ...]:
    """What is bad input (one line, exit 2): the tool's own `BAD_INPUT` and, once `reference_models` is
    loaded (a command that resolved a config), its `ConfigError` (it does not import `diagnose`)."""
    config = sys.modules.get("reference_models.config")
    return (*BAD_INPUT, config.ConfigError) if config is not None else BAD_INPUT


def _interrupted_line(exc: KeyboardInterrupt, written: list[str]) -> str:
    if str(exc):  # a staged write says what it kept
        return str(exc)
    if written:
        return f"interrupted: complete output kept in {', '.join(written)}; nothing half-written"
    return "interrupted: no output written"


def _guarded(fn: Callable, publishes: bool = True, distributed: bool = False) -> Callable:
    """The exit-code contract around one command, plus the common options it does not declare."""
    sig = inspect.signature(fn, eval_str=True)
    injected = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=ann)
                for name, ann in COMMON_OPTIONS.items() if name not in sig.parameters]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        debug = bool(kwargs.get("debug"))
        own = {k: v for k, v in kwargs.items() if k in sig.parameters}
        with committed_dirs() as written:
            try:
                _check_common(own, publishes)
                if not distributed:
                    return fn(**own)
                from ..engine.ranks import process_group  # torch: only the commands that train under torchrun

                with process_group(str(own.get("device") or "cpu")):  # under torchrun: diagnose.engine.ranks
                    return fn(**own)
            except (Exit, ClickException, Abort):
                raise
            except bad_input_types() as exc:
                fail(" ".join(str(exc).split()))
                raise typer.Exit(EXIT_BAD_INPUT) from None
            except KeyboardInterrupt as exc:
                fail(_interrupted_line(exc, written))
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except Exception as exc:  # a bug or an unforeseen environment: one line, not a traceback
                if debug:
                    traceback.print_exc(file=sys.stderr)
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
                fail(f"{what} (run with --debug for the traceback)")
                raise typer.Exit(EXIT_UNEXPECTED) from None

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *injected])
    wrapper.__annotations__ = {**fn.__annotations__, **{p.name: p.annotation for p in injected}}
    return wrapper


@app.callback()
def _root() -> None:
    """Diagnose vision-to-text alignment training failures: run, probe, ablate, report."""


app.command("train")(_guarded(train_command, publishes=False, distributed=True))
app.command("gradflow")(_guarded(gradflow_command, distributed=True))
app.command("compare")(_guarded(compare_command))
app.command("ablate")(_guarded(ablate_command))
app.command("report")(_guarded(report_command))
app.command("checkpoint")(_guarded(checkpoint_command))
app.command("logs")(_guarded(logs_command))
app.command("datasignal")(_guarded(datasignal_command, publishes=False))
app.command("lint")(_guarded(lint_command, publishes=False))


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a cancelled CI job) cleans up like Ctrl-C: staged directories removed


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app()

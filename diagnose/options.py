"""Option types shared by the commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Config alias (perceiver, direct), bundled file name, or YAML path.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config value: dotted.key=value (repeatable).")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default: the config's).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu or cuda.")]
ScaleOpt = Annotated[str, typer.Option("--scale", help="full (the config as written), small (CPU, ~1 min), tiny (tests).")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps to run.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs to run (instead of --steps).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to write.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; plain output.")]
FailOnOpt = Annotated[str, typer.Option("--fail-on", help="Exit 1 when a finding at or above this severity exists: info, warning, error.")]


def check_fail_on(fail_on: str) -> None:
    from reference_models.config import ConfigError

    if fail_on not in ("info", "warning", "error"):
        raise ConfigError(f"--fail-on '{fail_on}': expected one of info, warning, error")

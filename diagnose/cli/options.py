"""Option types shared by the commands, declared once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.errors import ConfigError

ConfigOpt = Annotated[str,
                      typer.Option("--config", "-c",
                                   help="Config alias (perceiver, direct), bundled file name, or YAML path.")]
SetOpt = Annotated[Optional[list[str]],
                   typer.Option("--set", help="Override a config value: dotted.key=value (repeatable).")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default: the config's).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu or cuda.")]
ScaleOpt = Annotated[str,
                     typer.Option("--scale", help="full (the config as written), small (CPU, ~1 min), tiny (tests).")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps to run.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs to run (instead of --steps).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to write.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; plain output.")]
FailOnOpt = Annotated[str, typer.Option("--fail-on", help="Exit 1 when a finding at or above this severity exists: "
                                                          "info, warning, error.")]


def check_fail_on(fail_on: str) -> None:
    if fail_on not in ("info", "warning", "error"):
        raise ConfigError(f"--fail-on '{fail_on}': expected one of info, warning, error")


ExecutorOpt = Annotated[str,
                        typer.Option("--executor",
                                     help="Where runs execute: local (worker processes on this machine) or ray (Ray "
                                          "tasks; pip install -e '.[ray]').")]
RayAddressOpt = Annotated[Optional[str],
                          typer.Option("--ray-address",
                                       help="Ray cluster to join (e.g. auto, ray://head:10001); default: a local Ray "
                                            "instance.")]
CpusPerRunOpt = Annotated[int,
                          typer.Option("--cpus-per-run", min=1,
                                       help="CPUs each Ray task asks for (torch threads per run).")]
GpusPerRunOpt = Annotated[float,
                          typer.Option("--gpus-per-run", min=0,
                                       help="GPUs each Ray task asks for (with --device cuda).")]
SeedsOpt = Annotated[int,
                     typer.Option("--seeds", min=1,
                                  help="Repeat every run over K seeds (--seed, +1, ...: data order and init); "
                                       "verdicts count the seeds.")]
WorkersOpt = Annotated[Optional[int],
                       typer.Option("--workers", min=1,
                                    help="Local processes running runs in parallel (default: 1 for one run, else up "
                                         "to the CPU count).")]
AblationWorkersOpt = Annotated[int,
                               typer.Option("--workers", min=1,
                                            help="Processes running ablation runs in parallel (capped at the CPU "
                                                 "count).")]
FixOpt = Annotated[Optional[list[str]],
                   typer.Option("--fix", help="Test only these hypotheses (repeatable); default: all that apply.")]
CheckpointOpt = Annotated[Optional[Path],
                          typer.Option("--checkpoint",
                                       help="Start from these weights (safetensors, or torch with weights_only=True).")]
ReferenceConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="Check keys and shapes against this "
                                                                                 "reference config (alias or YAML).")]
EXIT_INCOMPLETE = 4  # the report is written, but some of its runs failed (each named with its error line)


def default_workers(workers: int | None, runs: int) -> int:
    """Explicit --workers wins; else one process per run up to the CPU count when there are several runs."""
    if workers is not None:
        return workers
    return 1 if runs <= 1 else min(runs, os.cpu_count() or 1)


def check_not_distributed(what: str) -> None:
    """Seed replicas and executors spread whole runs; under torchrun one run is already spread over ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"{what}: not under torchrun (each rank would run every replica); run them without torchrun")


def make_run_executor(executor: str, workers: int, device: str, ray_address: str | None, cpus_per_run: int,
                      gpus_per_run: float):
    """The executor an ablation-style command asked for; a bad choice or a missing Ray is one line, exit 2."""
    from ..lab.executors import EXECUTORS, make_executor  # multiprocessing: only for commands that run

    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if executor != "ray" and (ray_address or gpus_per_run):
        raise ConfigError("--ray-address/--gpus-per-run: only with --executor ray")
    if gpus_per_run and device == "cpu":
        raise ConfigError(f"--gpus-per-run {gpus_per_run:g} with --device cpu: pass --device cuda for runs on GPUs")
    try:
        return make_executor(executor, workers if device == "cpu" else 1, ray_address, cpus_per_run, gpus_per_run)
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    except ConnectionError as exc:
        raise ConfigError(f"--ray-address {ray_address}: cannot connect ({exc})") from None


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback of an unexpected error.")]

SEED_RANGE = 2**32  # numpy's and most data loaders' seed range; torch accepts more, but a seed must replay everywhere
PSEUDO_FS = ("/proc", "/sys", "/dev")  # kernel interfaces, never a place for a run directory


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < SEED_RANGE:
        raise ConfigError(f"--seed {seed}: expected an integer in [0, 2^32)")


def check_device(device: str | None) -> None:
    """The device exists on this machine (torch.device parses it; the backend must be available)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device '{device}': expected a torch device such as cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device '{device}': CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device '{device}': only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device '{device}': MPS is not available on this machine (use --device cpu)")
        return
    raise ConfigError(f"--device '{device}': device type '{dev.type}' is not supported here; expected cpu, cuda or mps")


def check_out(out: Path | None, option: str = "--out") -> None:
    """Fail before any work when `out` cannot become a run directory: it is a file, lies under a
    file or a kernel pseudo file system, or its nearest existing parent is not writable (access(2):
    permissions and read-only mounts; nothing is created, so a refused run changes nothing)."""
    if out is None:
        return
    out = Path(out).expanduser()
    resolved = out.resolve()
    pseudo = [p for p in PSEUDO_FS if resolved == Path(p) or Path(p) in resolved.parents]
    if pseudo:
        raise ConfigError(f"{option} {out}: under {pseudo[0]} (a kernel file system), not a place for a run directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out}: exists and is not a directory")
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        # a run directory is replaced as a whole (see diagnose.core.staging.staged): never the one we stand in
        raise ConfigError(f"{option} {out}: is the current directory or contains it; a run directory is replaced "
                          "as a whole, so give a directory of its own (e.g. runs/NAME) or run from its parent")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{option} {out}: {ancestor} is a file, expected a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {out}: cannot write in {ancestor} (permission denied or read-only file system)")


def check_step_summary() -> None:
    """GITHUB_STEP_SUMMARY, when set, must name a file that can be appended to."""
    value = os.environ.get("GITHUB_STEP_SUMMARY")
    if not value:
        return
    path = Path(value)
    if path.is_dir():
        raise ConfigError(f"GITHUB_STEP_SUMMARY={value}: is a directory, expected a file to append the report to")
    if not path.parent.is_dir():
        raise ConfigError(f"GITHUB_STEP_SUMMARY={value}: directory {path.parent} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"GITHUB_STEP_SUMMARY={value}: not writable")

# diagnose ablate -- python train.py: the user's own script
OptionalConfigOpt = Annotated[Optional[str],
                              typer.Option("--config", "-c",
                                           help="Config alias (perceiver, direct), bundled file name, or YAML path; "
                                                "or give your own script after `--`.")]
ScriptArg = Annotated[Optional[list[str]],
                      typer.Argument(help="Your training script after `--` (e.g. -- python train.py --lr 1e-3): it "
                                          "opens diagnose.watch; each run applies one fix through it.",
                                     show_default=False)]
VariantOpt = Annotated[Optional[list[str]],
                       typer.Option("--variant", help="A fix that is a change of your script's arguments: "
                                                      "NAME=ARGS appended to the command (repeatable).")]
ListFixesOpt = Annotated[bool, typer.Option("--list-fixes", help="List the fixes and the causes they test, then exit.")]
MaxFixesOpt = Annotated[int, typer.Option("--max-fixes", min=1, help="At most this many candidate fixes from the "
                                                                     "baseline's causes.")]
TimeoutOpt = Annotated[Optional[float],
                       typer.Option("--timeout", min=1, help="Seconds one run of the script may take.")]

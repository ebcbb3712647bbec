"""`diagnose ablate -- python train.py`: which fix works, tested in the user's own, unmodified script.

The script already opens a `diagnose.watch` (or uses our Lightning / HF callback). The runner starts it once
per run with ``DIAGNOSE_ABLATE`` in its environment (`diagnose.engine.ablation_env`): the watch writes its
run directory where the runner says, applies the run's intervention (`diagnose.engine.interventions`) and
stops the script cleanly after ``--steps`` observed steps. Seeds: seed k shifts every seed the script sets
by k (`diagnose/engine/bootstrap`); seed 0 is the user's own run. A *variant* is a fix that is a change of
the script's own command line (``--variant "batch=--batch-size 128"``): for what only the script can change
(batch, architecture).

Plan: the baseline on every seed; then, unless fixes are named, the interventions that test the baseline's
ranked root causes (first seed's order, then the others'), at most `max_fixes`, with lr x0.1 / x10 as
controls when the causes suggest fewer than two fixes or fixes of one cause only; each run on every
seed. `--fix auto` among named fixes adds the baseline's candidates to them.

Verdict per seed, fix run against the same seed's baseline (final loss / ln(B) from the watch's own
verdict, `diagnose.core.definitions`):
  baseline did not learn:  confirmed if the fix run learns; inconclusive if it ends at least
                           MEANINGFUL_DROP x ln(B) lower without learning; otherwise refuted.
  baseline learned:        confirmed if the fix run ends at least MEANINGFUL_DROP x ln(B) lower (and its
                           held-out R@1, when measured, is not lower); refuted if it ends no lower than
                           CHANCE_REL_TOL x ln(B) below the baseline; otherwise inconclusive.
  a non-finite fix run is refuted (NaN never scores); against a baseline that diverged, a fix run that
  stays finite and ends below the chance band is confirmed (the failure was the divergence); a fix run that
  ends at its baseline's loss to the last bit is refuted when the fix measured that it changed the run's tensors
  (`Intervention.reached`: an input it shifted, weights its lr moved), else not applicable on that seed
  (it may not have acted). Over seeds:
  confirmed / refuted by a strict majority, else inconclusive. A run that crashed is that run's failure
  (reported), not the ablation's.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..core.definitions import CHANCE_REL_TOL
from ..core.errors import ConfigError
from ..core.summary import RunSummary, Summary
from ..engine.ablation_env import ENV
from . import live
from .executors import Failed, Job, SerialExecutor

BOOTSTRAP = Path(__file__).resolve().parents[1] / "engine" / "bootstrap"
# A fix must move final loss / ln(B) by more than this to count: larger than the +-0.03 band in which the
# rules call a loss "at chance" (CHANCE_REL_TOL), the same margin the reference ablation uses
MEANINGFUL_DROP = 0.05
DEFAULT_MAX_FIXES = 5
CONTROLS = ("lr_down", "lr_up")  # the first thing users try; added when the causes suggest fewer than 2 fixes
# run when nothing the baseline suggested was refuted: often because no lr change reaches weights the optimizer
# never steps (a stale optimizer, a zero head); a control that changes the forward pass can be refuted there
FALLBACK_CONTROLS = ("centre_inputs",)
TAIL_LINES = 3
POLL_SECONDS = 0.25  # how often a run's progress file is read while someone listens (its watch writes as often)


class ScriptFailed(ConfigError):
    """The baseline cannot run: the script exits with an error or never opens a watch (exit 2)."""


@dataclass
class Candidate:
    name: str  # the run's label: an intervention's name (with its parameters when given), or a variant's
    tests: list[str]
    changes: str
    args: list[str] = field(default_factory=list)  # extra script arguments (variants)
    params: dict = field(default_factory=dict)
    source: str = "named"  # named | cause:<id> | control | variant
    fix: str | None = None  # the intervention applied (None for a variant); defaults to `name`

    def __post_init__(self) -> None:
        if self.fix is None and self.source != "variant":
            self.fix = self.name


def run_name(fix: str | None, seed: int) -> str:
    base = "baseline" if fix is None else f"fix:{fix}"
    return base if seed == 0 else f"{base} (seed {seed})"


def run_script(command: list[str], spec: dict, cwd: str, threads: int | None, timeout: float | None) -> dict:
    """One run of the user's script under the ablation's spec; module-level for worker processes and Ray.
    Returns what the run's watch wrote, or raises with the script's own last error line. While someone
    listens (`diagnose.lab.live`: the console, here or through the executor's channel), the run's watch
    writes its step to a progress file that is polled and emitted as the run goes."""
    progress = _Progress(spec) if live.active() else None
    if progress is not None:
        spec = {**spec, "progress": str(progress.path)}
    env = dict(os.environ)
    env[ENV] = json.dumps(spec)
    env["PYTHONPATH"] = os.pathsep.join([str(BOOTSTRAP), *filter(None, [env.get("PYTHONPATH")])])
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    try:
        proc = _Child(command, cwd, env).run(timeout, progress)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`{shlex.join(command)}` ran past {timeout:g} s") from None
    except OSError as exc:
        raise ScriptFailed(f"cannot start `{shlex.join(command)}`: {exc.strerror or exc}") from None
    status_file, out = Path(spec["status"]), Path(spec["out"])
    status = json.loads(status_file.read_text()) if status_file.is_file() else None
    if status is None:
        tail = _tail(proc.stderr)
        if proc.returncode != 0:
            seen = progress.step if progress is not None else 0
            where = (f"after {seen} observed step(s), before its diagnose.watch closed" if seen else
                     "before its diagnose.watch wrote a status (none opened, or it failed before closing)")
            raise ScriptFailed(f"`{shlex.join(command)}` exited {proc.returncode} {where}{': ' + tail if tail else ''}")
        raise ScriptFailed(f"`{shlex.join(command)}` ended without opening a diagnose.watch (call "
                           "diagnose.watch(model, optimizer) in the script, or use the Lightning / HF callback)")
    if status.get("not_applicable"):
        return {"name": spec["run"], "status": status, "summary": None}
    if proc.returncode != 0 and not status.get("capped"):
        raise RuntimeError(f"the script exited {proc.returncode}: {_tail(proc.stderr) or 'no error output'}")
    if not (out / "summary.json").is_file():
        raise RuntimeError(f"the run wrote no summary ({out}): {_tail(proc.stderr) or 'no error output'}")
    return {"name": spec["run"], "status": status, "summary": json.loads((out / "summary.json").read_text()),
            "readings": readings(out / "records.csv.gz")}


class _Progress:
    """The run's progress file (written by its watch: `diagnose.engine.ablation_env`), emitted as a step event
    when its step changed."""

    def __init__(self, spec: dict):
        self.run, self.path, self.step = spec["run"], Path(f"{spec['status']}.progress"), 0

    def __call__(self) -> None:
        try:
            seen = json.loads(self.path.read_text())
        except (OSError, ValueError):  # not written yet (or being replaced)
            return
        if not isinstance(seen, dict) or not isinstance(seen.get("step"), int) or seen["step"] == self.step:
            return
        self.step = seen["step"]
        live.emit({"kind": "step", "run": self.run, "step": self.step, "total": seen.get("total"), "loss": None,
                   "chance": None})


def readings(records_file: Path) -> dict[str, float]:
    """Two mechanism readings per run, for before/after: the end-of-run mean cosine of the most alike
    embedding (collapse) and the largest per-layer update/weight ratio of any step (the step size)."""
    if not records_file.is_file():
        return {}
    r = pd.read_csv(records_file, usecols=["step", "probe", "target", "metric", "value"])
    out: dict[str, float] = {}
    cos = r[(r["probe"] == "collapse") & (r["metric"] == "cosine_mean") & r["target"].isin(["image", "text"])]
    if len(cos):
        cut = cos["step"].max() - max(1, int(0.2 * (cos["step"].max() - cos["step"].min() + 1))) + 1
        out["cosine_end"] = float(cos[cos["step"] >= cut].groupby("target")["value"].mean().max())
    up = r[(r["probe"] == "gradient_flow") & (r["metric"] == "update_to_param")]["value"]
    up = up[up.abs() != float("inf")]  # a parameter at norm 0 (a zero-initialised bias) has no ratio
    if len(up):
        out["update_peak"] = float(up.max())
    return out


class _Child:
    """One script process, known to `stop_all` while it runs (Ctrl-C must not wait for queued or running runs)."""

    running: set[subprocess.Popen] = set()
    lock = threading.Lock()
    stopping = False

    def __init__(self, command: list[str], cwd: str, env: dict):
        self.command, self.cwd, self.env = command, cwd, env

    def run(self, timeout: float | None, tick: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
        """Wait for the script (at most `timeout` s), calling `tick` every POLL_SECONDS and once at its end."""
        with _Child.lock:
            if _Child.stopping:
                raise RuntimeError("the ablation was interrupted before this run started")
            proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            _Child.running.add(proc)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                wait = left if tick is None else POLL_SECONDS if left is None else min(POLL_SECONDS, left)
                try:  # a wait cut short loses no output (subprocess's own guarantee): wait again
                    out, err = proc.communicate(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    tick()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        finally:
            with _Child.lock:
                _Child.running.discard(proc)
        if tick is not None:
            tick()  # a run shorter than one poll still shows its last step
        return subprocess.CompletedProcess(self.command, proc.returncode, out, err)


def stop_all(grace: float = 5.0) -> None:
    """Stop every script process still running and start no new one (Ctrl-C): SIGTERM, SIGKILL after `grace` s."""
    with _Child.lock:
        _Child.stopping = True
        procs = list(_Child.running)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return " | ".join(lines[-TAIL_LINES:])[:400]


# -- planning --------------------------------------------------------------------------------------------
def candidates_from(baselines: list[dict], named: list[str], variants: dict[str, list[str]],
                    max_fixes: int = DEFAULT_MAX_FIXES) -> list[Candidate]:
    """Named fixes and variants first; else those testing the baselines' ranked causes (+ controls)."""
    from ..engine.interventions import CATALOGUE, for_cause  # torch: the driver only, never a runner thread
    out: list[Candidate] = []
    auto = "auto" in named  # the baseline's candidates as well as the named ones
    for spec in (n for n in named if n != "auto"):
        name, params = parse_fix(spec)
        if name not in CATALOGUE:
            raise ConfigError(f"--fix {name!r}: unknown fix; expected one of {', '.join(CATALOGUE)}, or auto "
                              "(`diagnose ablate --list-fixes`)")
        cls = CATALOGUE[name]
        unknown = set(params) - set(cls.defaults)
        if unknown:
            raise ConfigError(f"--fix {spec!r}: unknown parameter(s) {', '.join(sorted(unknown))}; {name} takes "
                              f"{', '.join(cls.defaults) or 'none'}")
        label = spec.strip() if params else name  # lr_up and lr_up:factor=100 are two candidates
        if any(c.name == label for c in out):
            raise ConfigError(f"--fix {spec!r} is given twice")
        out.append(Candidate(label, list(cls.tests), cls.changes, params=params, fix=name))
    for name, args in variants.items():
        out.append(Candidate(name, [], "script arguments: " + shlex.join(args), args=list(args), source="variant"))
    if out and not auto:
        return out
    named_out, out = out, []
    seen: set[str] = {c.fix for c in named_out if c.fix}
    for base in baselines:
        for cause in base.get("root_causes", []):
            for name in for_cause(cause["cause"], cause.get("findings", ())):
                if name not in seen:
                    seen.add(name)
                    cls = CATALOGUE[name]
                    out.append(Candidate(name, list(cls.tests), cls.changes, source=f"cause:{cause['cause']}"))
    out = out[:max_fixes]
    for name in CONTROLS:
        tested = {c for cand in named_out + out for c in cand.tests}
        # a contrast: at least two candidates, and not all of them testing the same cause (then a control
        # that tests another one), so that a refutation can stand beside a confirmation
        if len(out) + len(named_out) >= 2 and len(tested) > 1 and not _one_cause(named_out + out):
            break
        if name not in seen and not set(CATALOGUE[name].tests) <= tested:
            cls = CATALOGUE[name]
            out.append(Candidate(name, list(cls.tests), cls.changes, source="control"))
            seen.add(name)
    return named_out + out


def fallback_controls(cands: list[Candidate], hyps: list[dict]) -> list[Candidate]:
    """A control on the forward pass when the candidates chosen from the baseline left no other cause refuted: every
    change that acted fixed the run, could not act (no lr change reaches weights the optimizer never steps), or was
    refuted as one fix of a cause another fix confirmed (lr x10 beside the unscale a clip needed: both test a too-low
    lr, so nothing stands against another cause)."""
    from ..engine.interventions import CATALOGUE

    chosen = any(c.source.startswith("cause:") or c.source == "control" for c in cands)  # not only --fix / --variant
    confirmed = {t for c, h in zip(cands, hyps) if h["verdict"] == "confirmed" for t in c.tests}
    contrast = any(h["verdict"] == "refuted" and not set(c.tests) <= confirmed for c, h in zip(cands, hyps))
    if not chosen or contrast:
        return []
    have, tested = {c.fix for c in cands}, {t for c in cands for t in c.tests}
    for name in FALLBACK_CONTROLS:
        cls = CATALOGUE[name]
        if name not in have and not set(cls.tests) <= tested:
            return [Candidate(name, list(cls.tests), cls.changes, source="control")]
    return []


def _one_cause(cands: list[Candidate]) -> bool:
    """All candidates test one cause in common (lr_down, warmup and clip_grad all test a too-high lr)."""
    sets = [set(c.tests) for c in cands if c.tests]
    return bool(sets) and bool(set.intersection(*sets))


def parse_fix(spec: str) -> tuple[str, dict]:
    """``name`` or ``name:key=value,key=value`` (numbers become floats): e.g. ``lr_up:factor=100``."""
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--fix {spec!r}: expected NAME or NAME:key=value[,key=value]")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            params[key.strip()] = value
    return name.strip(), params


# -- verdicts --------------------------------------------------------------------------------------------
def _numbers(run: dict | None) -> dict:
    if not run:
        return {}
    v, r = run.get("verdict") or {}, run.get("retrieval") or {}
    ratio = v.get("loss_over_chance")
    return {"run": run["name"], "loss_over_lnB": ratio if ratio is not None else math.nan,
            "learned": bool(v.get("learned")), "label": v.get("label", ""), "r@1": r.get("r@1"),
            "chance@1": r.get("chance@1"), "steps": run.get("steps")}


def judge(base: dict, fixed: dict, reached: list[str] | None = None) -> tuple[str, str]:
    """One seed's verdict for a fix, from the two runs' numbers (`_numbers`) and what the fix measured of its own
    reach in the run (`Intervention.reached`)."""
    rb, rf = base["loss_over_lnB"], fixed["loss_over_lnB"]
    if math.isfinite(rb) and rf == rb and base.get("steps") == fixed.get("steps"):
        # the same seed, the same end-of-run loss to the last bit. Measured to have changed the run's tensors, the
        # fix was tested and the loss does not depend on what it changes (an input a zeroed head ignores);
        # otherwise it may not have acted at all (an lr scaled from 0, weights no gradient reaches), and a
        # refutation would claim a test that did not happen
        if reached:
            return "refuted", (f"the fix changed the run ({reached[0]}) and its loss still ends at the baseline's to "
                               f"every digit ({rf!r})")
        return "not applicable", f"the fix run ends at the baseline's loss to every digit ({rf!r}): it changed nothing"
    if not math.isfinite(rf):
        return "refuted", "the fix run's loss is non-finite"
    if not math.isfinite(rb):  # the failure is the divergence: the fix must remove it and let training proceed
        if fixed["learned"] or rf < 1 - CHANCE_REL_TOL:
            return "confirmed", f"the baseline diverged; the fix run stays finite, loss/ln(B) {rf:.3f}"
        return "inconclusive", f"the fix run stays finite but at chance (loss/ln(B) {rf:.3f})"
    drop = rb - rf
    if not base["learned"]:
        if fixed["learned"]:
            return "confirmed", "the fix makes the run learn"
        if drop >= MEANINGFUL_DROP:
            return "inconclusive", f"the fix lowers loss/ln(B) by {drop:.3f} but the run still does not learn"
        return "refuted", f"the run still does not learn (loss/ln(B) {rf:.3f} vs {rb:.3f})"
    r1b, r1f = base.get("r@1"), fixed.get("r@1")
    worse_r1 = r1b is not None and r1f is not None and r1f < r1b
    if drop >= MEANINGFUL_DROP and not worse_r1:
        return "confirmed", f"the fix lowers loss/ln(B) by {drop:.3f} on a run that learns"
    if drop < CHANCE_REL_TOL:
        return "refuted", f"the fix does not lower the loss (loss/ln(B) {rf:.3f} vs {rb:.3f})"
    return "inconclusive", f"the fix lowers loss/ln(B) by {drop:.3f}, less than {MEANINGFUL_DROP}"


def combine(per_seed: list[dict]) -> tuple[str, str]:
    k = len(per_seed)
    counts: dict[str, int] = {}
    for d in per_seed:
        counts[d["verdict"]] = counts.get(d["verdict"], 0) + 1
    tally = "; ".join(f"{v} on {n}/{k} seeds" for v, n in counts.items())
    for v in ("confirmed", "refuted"):
        if counts.get(v, 0) * 2 > k:
            return v, tally
    if counts.get("not applicable", 0) == k:
        return "not applicable", tally
    if counts.get("failed", 0) == k:
        return "failed", tally
    return "inconclusive", tally


# -- the ablation ----------------------------------------------------------------------------------------
@dataclass
class ScriptAblation:
    summary: Summary
    records: pd.DataFrame
    runs_dir: Path  # each run's own run directory, to move under the report's directory


class _Runner:
    def __init__(self, command: list[str], steps: int | None, executor: SerialExecutor, work: Path,
                 progress: Callable[[str, Any], object] | None, timeout: float | None):
        self.command, self.steps, self.executor, self.work = command, steps, executor, work
        self.progress, self.timeout = progress, timeout
        self.results: dict[str, Any] = {}

    def run(self, items: list[tuple[Candidate | None, int]]) -> None:
        jobs = []
        for cand, seed in items:
            name = run_name(cand.name if cand else None, seed)
            slug = _slug(name)
            spec = {"run": name, "out": str(self.work / "runs" / slug), "status": str(self.work / "status" / slug),
                    "steps": self.steps, "seed_offset": seed,
                    "fix": cand.fix if cand else None,
                    "params": cand.params if cand else {}}
            command = self.command + (cand.args if cand else [])
            jobs.append(Job(name, run_script, (command, spec, os.getcwd(), self.executor.threads, self.timeout)))
        self.results.update(self.executor.run(jobs, on_done=self.progress))


def run_script_ablation(command: list[str], steps: int | None, seeds: int, named: list[str],
                        variants: dict[str, list[str]], executor: SerialExecutor, work: Path,
                        progress: Callable[[str, Any], object] | None = None, max_fixes: int = DEFAULT_MAX_FIXES,
                        timeout: float | None = None) -> ScriptAblation:
    """Baselines, then each candidate on every seed; raises `ScriptFailed` when the first baseline cannot run."""
    candidates_from([], [n for n in named if n != "auto"], variants, max_fixes)  # bad input before any run
    with _Child.lock:
        _Child.stopping = False  # a new ablation in this process (an earlier one may have been stopped)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    (work / "status").mkdir(exist_ok=True)
    runner = _Runner(command, steps, executor, work, progress, timeout)
    runner.run([(None, 0)])  # the first baseline alone: a script that cannot run fails fast, once
    first = runner.results["baseline"]
    if isinstance(first, Failed):
        raise ScriptFailed(first.error.split(": ", 1)[-1] if first.error.startswith("ScriptFailed") else
                           f"the baseline run failed: {first.error}")
    runner.run([(None, s) for s in range(1, seeds)])
    baselines = [r["summary"]["runs"][0] for r in runner.results.values() if isinstance(r, dict) and r.get("summary")]
    cands = candidates_from(baselines, named, variants, max_fixes)
    runner.run([(c, s) for c in cands for s in range(seeds)])
    hyps = [_decide(c, runner.results, seeds) for c in cands]
    extra = fallback_controls(cands, hyps)
    if extra:
        runner.run([(c, s) for c in extra for s in range(seeds)])
        cands, hyps = cands + extra, hyps + [_decide(c, runner.results, seeds) for c in extra]
    return _assemble(command, steps, seeds, cands, hyps, runner.results, work)


def _decide(cand: Candidate, results: dict, seeds: int) -> dict:
    per_seed = []
    for s in range(seeds):
        base, fixed = results.get(run_name(None, s)), results.get(run_name(cand.name, s))
        d: dict[str, Any] = {"seed": s}
        if isinstance(fixed, Failed):
            d.update(verdict="failed", why=fixed.error)
        elif fixed and fixed["status"].get("not_applicable"):
            d.update(verdict="not applicable", why=fixed["status"]["not_applicable"])
        elif isinstance(base, Failed) or not base:
            d.update(verdict="failed", why=f"the seed's baseline failed: {getattr(base, 'error', 'missing')}")
        else:
            nb = {**_numbers(base["summary"]["runs"][0]), **base.get("readings", {})}
            nf = {**_numbers(fixed["summary"]["runs"][0]), **fixed.get("readings", {})}
            v, why = judge(nb, nf, fixed["status"].get("reached"))
            d.update(verdict=v, why=why, baseline=nb, fix=nf, applied=fixed["status"].get("applied", []))
        per_seed.append(d)
    verdict, tally = combine(per_seed)
    first = next((d for d in per_seed if "fix" in d), per_seed[0])
    return {"id": cand.name, "claim": "; ".join(cand.tests) or "(variant)", "source": cand.source,
            "fix_text": cand.changes, "fix": cand.args, "verdict": verdict, "tally": tally, "per_seed": per_seed,
            "mechanism": "; ".join(first.get("applied", [])) or "-", "mechanism_claimed": cand.changes,
            "summary": f"{tally}. Seed {first['seed']}: {first.get('why', '')}"}


def _assemble(command, steps, seeds, cands, hyps, results, work: Path) -> ScriptAblation:
    runs, frames = [], []
    for name, res in results.items():
        if not isinstance(res, dict) or not res.get("summary"):
            continue
        data = dict(res["summary"]["runs"][0], name=name)
        runs.append(RunSummary.from_dict(data))
        rec_file = work / "runs" / _slug(name) / "records.csv.gz"  # diagnose.engine.rundir.RECORDS_FILE
        if rec_file.is_file():
            frames.append(pd.read_csv(rec_file).assign(run=name))
    first = results["baseline"]["summary"]
    failed = {n: r.error for n, r in results.items() if isinstance(r, Failed)}
    summary = Summary(runs, findings=list(first.get("findings", [])), hypotheses=hyps,
                      sections={"script_ablation": {
                          "command": shlex.join(command), "steps": steps, "seeds": seeds,
                          "candidates": [c.__dict__ for c in cands], "failed_runs": failed,
                          "baseline_learned": [bool((r["summary"]["runs"][0].get("verdict") or {}).get("learned"))
                                               for n, r in results.items() if n.startswith("baseline")
                                               and isinstance(r, dict)],
                          "runs_executed": len(results)}})
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ScriptAblation(summary, records, work / "runs")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def scratch_dir(out: Path) -> Path:
    """Where the runs write while the ablation goes on: beside `out`, removed or moved under it at the end."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}-runs-", dir=out.parent))


def discard(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)


__all__ = ["ScriptAblation", "ScriptFailed", "candidates_from", "combine", "judge",
           "run_script_ablation"]

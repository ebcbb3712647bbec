"""A watch under `diagnose ablate -- python train.py`: the spec arrives through the environment.

The ablation runner (`diagnose.lab.script_ablation`) starts the user's unmodified script with
``DIAGNOSE_ABLATE`` set to a JSON object:

    {"run": "fix:lr_down (seed 1)", "out": "<run directory>", "status": "<status file>",
     "steps": 100, "seed_offset": 1, "fix": "lr_down", "params": {}, "progress": "<progress file>"}

The watch the script opens then (1) writes its run directory to ``out`` under the name ``run``,
with no online rule evaluation and no alarm (the whole run is judged at its end); (2) applies the intervention
``fix`` (none for the baseline) to the model and optimizer it was given; (3) after ``steps`` observed
steps closes itself (the run directory is written) and ends the script with exit status 0 (`StepCap`, a
SystemExit, so the script's own ``except Exception`` does not swallow it); (4) writes ``status``: what
the intervention did, or why it could not apply; (5) with ``progress`` in the spec (someone listens to the
runner), writes the observed step there as it goes (``{"step", "total"}``, at most every `PROGRESS_SECONDS`,
and at the cap) for the runner to show live. A trainer with its own way to stop (the HF Trainer's
``control.should_training_stop``) may take the stop over (`take_over_stop`): its loop then ends cleanly at
the cap, its end-of-training hooks run, and it ends the script after (`end_script`). The seed reaches the
script through the bootstrap in `diagnose/engine/bootstrap` (a seed offset on torch / numpy / random
seeding), not through the watch.

Stages: a script that opens a watch, closes it and opens another (a first stage then a second, a launch and
its resume simulated in one process) is one run of the ablation: every watch it opens in turn gets a fresh
instance of the fix on the model and optimizer it was handed, the step cap counts the observed steps of all of
them, the status file adds up what each stage's fix did, and the run directory is the last stage's (each
stage's close replaces it whole: the run is judged where the script ends). A watch opened while another is
open (a second model beside the first) is the script's own, as is any watch after the cap.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..core.files import write_json
from .ranks import leave_together

ENV = "DIAGNOSE_ABLATE"
_control: "AblationControl | None" = None  # the process's control: its watches are stages of one run
PROGRESS_SECONDS = 0.25  # the runner polls as often: a file written more often would only cost the run


class StepCap(SystemExit):
    """The ablation's step cap was reached: the run directory is written; the script ends with status 0."""

    def __init__(self) -> None:
        super().__init__(0)


def spec_from_env() -> dict[str, Any] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return spec if isinstance(spec, dict) and spec.get("out") and spec.get("status") else None


class AblationControl:
    """The ablation runner's side of a process's watches: the first, and each that opens after the last closed."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.steps = int(spec.get("steps") or 0)
        self.fix = None
        self.stages = 0
        self.not_applicable: str | None = None
        self.capped = False
        self._handles: list[Any] = []
        self._observed = 0
        self._closed = True  # the current stage's: no stage yet
        self._set_up = False
        self._request_stop: Callable[[], None] | None = None
        self._progress_at = 0.0
        self._did: list[str] = []  # what the fix did in the stages that closed
        self._reached: list[str] = []
        self._current: Any = None

    @classmethod
    def claim(cls, watch: Any) -> "AblationControl | None":
        """The control for `watch` when this process runs under the ablation and `watch` is its first, or opens
        after the previous stage's watch closed and before the cap (module docstring: stages)."""
        global _control
        spec = spec_from_env()
        if spec is None:
            return None
        if _control is None:
            _control = cls(spec)
            atexit.register(_control._at_exit)  # a script that neither leaves a `with` nor calls close()
        elif not _control._closed or _control.capped or _control.not_applicable:
            return None  # a watch beside the open one, or after the run ended: the script's own
        _control._next_stage(watch)
        return _control

    def _next_stage(self, watch: Any) -> None:
        from .interventions import make  # torch: only in the script's process, not in the runner

        spec = self.spec
        self.stages += 1
        if self.stages == 2:  # the first stage's lines were written before a second was known
            self._did = [f"stage 1: {d}" for d in self._did]
        self.fix = make(spec["fix"], spec.get("params")) if spec.get("fix") else None
        self._closed, self._set_up, self._request_stop, self._current = False, False, None, watch
        watch.out, watch.name, watch.alarm_policy = Path(spec["out"]), str(spec.get("run") or watch.name), "off"
        watch.evaluate_every = None  # no online rules: alarms are off, and the whole run is judged at its end
        watch.plots = "deferred"  # each run's PNGs on `diagnose report DIR`: the runner reads summary.json

    # -- called by the watch ---------------------------------------------------------------------------
    def setup(self, watch: Any) -> None:
        if self.fix is None or self._set_up:
            return
        self._set_up = True
        from .interventions import NotApplicable

        try:
            self.fix.setup(watch)
        except NotApplicable as exc:
            self._stop_not_applicable(watch, str(exc))
        if self.fix.uses_step_hooks() and watch.optimizer is not None:
            opt = watch.optimizer
            self._handles += [opt.register_step_pre_hook(lambda o, a, k: self.fix.before_step(o)),
                              opt.register_step_post_hook(lambda o, a, k: self.fix.after_step(o))]

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if self.fix is not None:
            from .interventions import NotApplicable

            try:
                self.fix.observe(watch, step, seen)
            except NotApplicable as exc:
                self._stop_not_applicable(watch, str(exc))

    def after_observe(self, watch: Any) -> None:
        if self.fix is not None:
            self.fix.after_observe(watch)
        self._observed += 1
        self._write_progress()
        if not self.steps or self._observed < self.steps:
            return
        self.capped = True
        if self._request_stop is not None and self._observed == self.steps:
            self._request_stop()  # the trainer leaves its loop after this step (take_over_stop)
            return
        watch.close()  # no trainer took the stop over, or it went on past the cap: stop here
        leave_together()
        raise StepCap()

    # -- called by an integration ----------------------------------------------------------------------
    def take_over_stop(self, request: Callable[[], None]) -> None:
        """At the cap, call `request` (which makes the trainer leave its loop after this step) instead of
        closing the watch and raising `StepCap` inside the step; the integration closes the watch when
        training ends and then calls `end_script`. A further observed step stops the run at once."""
        self._request_stop = request

    def end_script(self) -> None:
        """After the trainer ended at the cap and the watch closed: end the script (exit status 0)."""
        if self.capped:
            leave_together()
            raise StepCap()

    def close(self, watch: Any) -> None:
        if self._closed:
            return
        self._closed, self._current = True, None
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.fix is not None:
            self.fix.close()
            tag = f"stage {self.stages}: " if self.stages > 1 else ""
            self._did += [tag + d for d in self.fix.did]
            self._reached += [r for r in self.fix.reached if r not in self._reached]
        write_json(Path(self.spec["status"]), {
            "run": watch.name, "fix": self.spec.get("fix"), "applied": list(self._did),
            "reached": list(self._reached), "not_applicable": self.not_applicable, "observed": self._observed,
            "capped": self.capped, "stages": self.stages, "interrupted": getattr(watch, "interrupted", None)})

    # -- internals -------------------------------------------------------------------------------------
    def _stop_not_applicable(self, watch: Any, reason: str) -> None:
        self.not_applicable = reason
        watch.out = None  # nothing to report on a run that did not test the fix
        watch.close()
        raise StepCap()

    def _write_progress(self) -> None:
        path = self.spec.get("progress")
        now = time.monotonic()
        if not path or (now - self._progress_at < PROGRESS_SECONDS and self._observed != self.steps):
            return
        self._progress_at = now
        try:  # whole or not at all: the runner reads it while the run goes on
            tmp = f"{path}.tmp"
            Path(tmp).write_text(json.dumps({"step": self._observed, "total": self.steps or None}))
            os.replace(tmp, path)
        except OSError:  # progress is a courtesy: the run goes on
            pass

    def _at_exit(self) -> None:
        watch = self._current
        if watch is not None and not self._closed:
            try:
                watch.close()
            except Exception:  # noqa: BLE001 - the interpreter is ending; the status says what happened
                pass

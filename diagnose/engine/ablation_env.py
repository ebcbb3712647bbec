"""A watch under `diagnose ablate -- python train.py`: the spec arrives through the environment.

The ablation runner (`diagnose.lab.script_ablation`) starts the user's unmodified script with
``DIAGNOSE_ABLATE`` set to a JSON object:

    {"run": "fix:lr_down (seed 1)", "out": "<run directory>", "status": "<status file>",
     "steps": 100, "seed_offset": 1, "fix": "lr_down", "params": {}, "progress": "<progress file>"}

The first watch the script opens then (1) writes its run directory to ``out`` under the name ``run``,
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
"""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..core.files import write_json

ENV = "DIAGNOSE_ABLATE"
_claimed = False  # one watch per process is the ablation's: the first
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
    """Attached to the first watch of a process started by the ablation runner."""

    def __init__(self, spec: dict[str, Any]):
        from .interventions import make  # torch: only in the script's process, not in the runner

        self.spec = spec
        self.steps = int(spec.get("steps") or 0)
        self.fix = make(spec["fix"], spec.get("params")) if spec.get("fix") else None
        self.not_applicable: str | None = None
        self.capped = False
        self._handles: list[Any] = []
        self._observed = 0
        self._closed = False
        self._set_up = False
        self._request_stop: Callable[[], None] | None = None
        self._progress_at = 0.0

    @classmethod
    def claim(cls, watch: Any) -> "AblationControl | None":
        """The control for `watch` when this process runs under the ablation and no watch claimed it yet."""
        global _claimed
        spec = spec_from_env()
        if spec is None or _claimed:
            return None
        _claimed = True
        control = cls(spec)
        watch.out, watch.name, watch.alarm_policy = Path(spec["out"]), str(spec.get("run") or watch.name), "off"
        watch.evaluate_every = None  # no online rules: alarms are off, and the whole run is judged at its end
        watch.plots = "deferred"  # each run's PNGs on `diagnose report DIR`: the runner reads summary.json
        atexit.register(control._at_exit, watch)  # a script that neither leaves a `with` nor calls close()
        return control

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
        self._observed += 1
        self._write_progress()
        if not self.steps or self._observed < self.steps:
            return
        self.capped = True
        if self._request_stop is not None and self._observed == self.steps:
            self._request_stop()  # the trainer leaves its loop after this step (take_over_stop)
            return
        watch.close()  # no trainer took the stop over, or it went on past the cap: stop here
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
            raise StepCap()

    def close(self, watch: Any) -> None:
        if self._closed:
            return
        self._closed = True
        for h in self._handles:
            h.remove()
        if self.fix is not None:
            self.fix.close()
        write_json(Path(self.spec["status"]), {
            "run": watch.name, "fix": self.spec.get("fix"), "applied": list(self.fix.did) if self.fix else [],
            "reached": list(self.fix.reached) if self.fix else [],
            "not_applicable": self.not_applicable, "observed": self._observed, "capped": self.capped,
            "interrupted": getattr(watch, "interrupted", None)})

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

    def _at_exit(self, watch: Any) -> None:
        if not self._closed:
            try:
                watch.close()
            except Exception:  # noqa: BLE001 - the interpreter is ending; the status says what happened
                pass

"""When and where the online rules of a `Watch` run, and how their alarms are delivered.

Online evaluation runs at most every `evaluate_every` observed steps and is spaced out further so that
it costs at most `budget` of the training time (its own duration against the median step time). With a
budget the rules run in the shared child process (`diagnose.engine.rule_server`), or in a worker
thread where no process can start; with ``budget=None`` or ``background=False`` inside `observe`.
An alarm is logged (``alarm="warn"``), raised as `DiagnoseAlarm` (``"raise"``) or passed to the user's
function.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Union

import pandas as pd

from ..core.rules import RunContext
from .monitor import Alarm, Evaluation, evaluate_rules
from .rule_server import RuleClient, RuleProcessDied

log = logging.getLogger("diagnose")

AlarmPolicy = Union[str, Callable[[Alarm], Any], None]
# Online evaluation runs at most every EVALUATE_EVERY observed steps and is spaced out further so
# that it costs at most EVALUATE_BUDGET of the training time (measured: its own duration against
# the median step time), which keeps watch's overhead bounded on long runs.
EVALUATE_EVERY, EVALUATE_BUDGET = 5, 0.02
STEP_TIME_WINDOW = 31


class DiagnoseAlarm(RuntimeError):
    """Raised from `Watch.observe` under ``alarm="raise"`` when an error finding first holds."""

    def __init__(self, alarm: Alarm):
        self.alarm = alarm
        super().__init__(alarm_line(alarm))


def alarm_line(alarm: Alarm) -> str:
    f = alarm.finding
    target = f" ({f.target})" if f.target else ""
    return f"diagnose alarm at step {alarm.step}: {f.id}{target} in {f.run}: {f.message}"


class OnlineRules:
    """The online-evaluation half of `Watch` (its base class). It uses what `Watch.__init__` sets up:
    `monitor` (a RuleMonitor), `session` (the probes' ProbeSession), `evaluate_every`, `budget`,
    `background`, `alarm_policy`, `last_step`, `interrupted`, `_context()` and the scheduling state
    (`_pending`, `_pool`, `_server`, `_server_error`, `_server_note_logged`, `_observed`, `_next_eval`,
    `_step_time`, `_eval_time`, `_eval_in_last`, `_t_last`, `_intervals`)."""

    def evaluate(self) -> list[Alarm]:
        """Evaluate the rules on the records so far now, in this thread (also done on a schedule by
        `observe`); an evaluation still running in the background is waited for first."""
        new = self._collect(wait=True)
        t0 = time.perf_counter()
        self.monitor.ctx = self._context()
        self.monitor.replace(self.session.records)
        new += self.monitor.evaluate(self.last_step)
        self._eval_time = time.perf_counter() - t0
        return new

    # -- internals ---------------------------------------------------------------------------------
    def _time_step(self) -> None:
        """Training time per step: the median interval between observe calls, less our own evaluation."""
        now = time.perf_counter()
        if self._t_last is not None:
            self._intervals.append(max(0.0, now - self._t_last - self._eval_in_last))
            self._step_time_stale = True
        self._t_last, self._eval_in_last = now, 0.0

    @property
    def _step_time(self) -> float:
        """The median of the recent step intervals as of the last `_time_step` (or the value last set), computed
        where it is read (when an evaluation is scheduled), not on every step."""
        if getattr(self, "_step_time_stale", False):
            self._step_time_value, self._step_time_stale = statistics.median(self._intervals), False
        return getattr(self, "_step_time_value", 0.0)

    @_step_time.setter
    def _step_time(self, value: float) -> None:
        self._step_time_value, self._step_time_stale = value, False

    def _maybe_evaluate(self, step: int) -> list[Alarm]:
        new = self._collect(wait=False)
        if not self.evaluate_every or self._observed < self._next_eval or self._pending is not None:
            return new
        if not self.background:
            new = self.evaluate()
            self._eval_in_last = self._eval_time
            self._schedule_next(self._observed)
            return new
        t0 = time.perf_counter()  # shipping the records is the training thread's share of the cost
        self.monitor.ctx = ctx = self._context()
        self._pending = (self._submit(ctx), step, self._observed)
        self._eval_in_last = time.perf_counter() - t0
        return new

    def _submit(self, ctx: RunContext) -> Future:
        """An evaluation of the records so far in the rule process (diagnose/engine/rule_server.py), or in a
        worker thread if that process cannot run here."""
        self._start_server()
        if self._server is not None:
            try:
                return self._server.submit(self.session.buffer, ctx)
            except RuleProcessDied as exc:
                self._drop_server(str(exc))
        if not self._server_note_logged:
            self._server_note_logged = True
            log.info("diagnose: online rules in a thread of this process (rule process: %s)", self._server_error)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diagnose-rules")
        return self._pool.submit(_timed_rules, self.session.buffer.snapshot(wait=False), ctx)

    def _schedule_next(self, observed: int) -> None:
        spacing = self.evaluate_every
        if self.budget and self._step_time > 0:  # keep evaluation under `budget` of the training time
            spacing = max(spacing, math.ceil(self._eval_time / (self.budget * self._step_time)))
        self._next_eval = observed + spacing

    def _collect(self, wait: bool) -> list[Alarm]:
        """Book the background evaluation once it has ended (or wait for it); its new alarms."""
        if self._pending is None or not (wait or self._pending[0].done()):
            return []
        future, step, observed = self._pending
        self._pending = None
        try:
            evaluation, self._eval_time = future.result()
        except RuleProcessDied as exc:  # evaluated again at the next due step, in a thread
            self._drop_server(str(exc))
            return []
        self._schedule_next(observed)
        return self.monitor.apply(step, evaluation)

    def _start_server(self) -> None:
        if self._server is None and self._server_error is None:
            try:
                self._server = RuleClient()
            except OSError as exc:
                self._server_error = f"could not start: {exc}"

    def _drop_server(self, why: str) -> None:
        server, self._server, self._server_error = self._server, None, why
        if server is not None:
            server.close()

    def _finish_background(self) -> list[Alarm]:
        """At close: the evaluation still running is booked, its alarms logged or passed to the alarm
        function (returned: `close` raises them under ``alarm="raise"``), and the rule process ends."""
        try:
            late = self._collect(wait=True)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if self._server is not None:
                self._server.close()
                self._server = None
        for a in late:
            a.delivered_at = self.last_step
            if self.alarm_policy != "raise":
                self._raise_alarm(a)
            elif self.interrupted is not None:  # the block is ending by an exception: say it, don't mask it
                log.warning(alarm_line(a))
        return late

    def _raise_alarm(self, a: Alarm) -> None:
        policy = self.alarm_policy
        if policy == "warn":
            log.warning(alarm_line(a))
        elif policy == "raise":
            raise DiagnoseAlarm(a)
        elif callable(policy):
            policy(a)


def _timed_rules(snapshot: Callable[[], pd.DataFrame], ctx: RunContext) -> tuple[Evaluation, float]:
    """In the worker thread: build the snapshot's frame and run the rules on it; with the CPU time this
    thread spent (what the evaluation costs the machine; its wall time also counts waits for the GIL
    while the training thread runs Python)."""
    t0 = time.thread_time()
    return evaluate_rules(snapshot(), ctx), time.thread_time() - t0

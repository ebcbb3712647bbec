"""Live events of runs (progress, alarms) back to whoever listens, wherever the runs execute.

A run emits small dicts as it goes (`emit`): ``{"kind": "step", "run", "step", "total", "loss", "chance"}``
(at most every `STEP_EVENT_SECONDS`, and at the last step) and ``{"kind": "alarm", "run", "step", "line"}``
(an alarm of the online rules, when it fires). The listener is the CLI's console (`diagnose.cli.console.LiveRuns`):
`listening(sink)` installs it for runs in this process (the serial executor, threads); the local executor's
worker processes put their events on a queue that the driver drains into the same sink while jobs run
(`WorkerChannel`); Ray tasks send theirs to an actor the driver empties (`diagnose.lab.executors.RayExecutor`).
A user's script under `diagnose ablate --` writes its step to a file that the runner polls and emits
(`diagnose.lab.script_ablation`). Nothing listens under
``--quiet``: then no run evaluates its rules online just to print alarms (`active()` is False).

No torch here: the CLI imports this module to listen.
"""

from __future__ import annotations

import queue as queue_mod
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

Sink = Callable[[dict], Any]
STEP_EVENT_SECONDS = 0.1  # a bar redrawn ten times a second is live; more would only cost the run
_sinks: list[Sink] = []  # the listener of this process (a plain list: worker threads see it too)
_worker: dict[str, Any] = {}  # in a worker process: its queue and the driver's "listening" flag


def active() -> bool:
    """Whether anything listens to this process's runs now."""
    if _sinks:
        return True
    flag = _worker.get("listening")
    return bool(flag is not None and flag.is_set())


def emit(event: dict) -> None:
    """Send one event to the listener, if any; a listener's failure never stops a run."""
    try:
        if _sinks:
            _sinks[-1](event)
        elif active():
            _worker["queue"].put(event)
    except Exception:  # noqa: BLE001 - progress is a courtesy: the run goes on
        pass


@contextmanager
def listening(sink: Sink) -> Iterator[None]:
    """Runs in this process (and, through `WorkerChannel`, in its worker processes) report to `sink`."""
    _sinks.append(sink)
    try:
        yield
    finally:
        _sinks.remove(sink)


def current_sink() -> Sink | None:
    return _sinks[-1] if _sinks else None


def init_worker(events, listening_flag) -> None:
    """Worker-process initializer (with the executor's own): events go to `events` while the driver listens."""
    _worker.update(queue=events, listening=listening_flag)


class WorkerChannel:
    """The driver's end: a queue and a flag handed to worker processes when they start; while a sink
    listens (`forwarding`), a thread moves the workers' events to it."""

    def __init__(self, ctx):
        self.queue, self.flag = ctx.Queue(), ctx.Event()

    @contextmanager
    def forwarding(self, sink: Sink | None) -> Iterator[None]:
        if sink is None:
            yield
            return
        self.flag.set()
        stop = threading.Event()
        thread = threading.Thread(target=self._drain, args=(sink, stop), daemon=True, name="diagnose-live")
        thread.start()
        try:
            yield
        finally:
            self.flag.clear()
            stop.set()
            thread.join(timeout=2)

    def _drain(self, sink: Sink, stop: threading.Event) -> None:
        while True:
            try:
                event = self.queue.get(timeout=0.05)
            except queue_mod.Empty:
                if stop.is_set():
                    return
                continue
            except (EOFError, OSError):  # the executor closed the queue
                return
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - a console failure must not stop the runs
                pass


class StepEvents:
    """A training callback (reference_models.Callback's hooks) that emits throttled step events; the last
    step is always sent."""

    def __init__(self, run: str, total: int):
        self.run, self.total, self._last = run, int(total), 0.0

    def on_backward(self, model, info):
        pass

    def on_epoch_end(self, model, epoch, step):
        pass

    def on_step_end(self, model, info):
        now = time.monotonic()
        step = int(info.step) + 1
        if now - self._last < STEP_EVENT_SECONDS and step < self.total:
            return
        self._last = now
        loss = info.loss.logged.get("loss_clip")
        emit({"kind": "step", "run": self.run, "step": step, "total": self.total,
              "loss": None if loss is None else float(loss), "chance": float(info.loss.chance)})


def alarm_event(run: str) -> Callable:
    """A watch's `alarm=` policy that emits each alarm as an event (one line: `diagnose.engine.online.alarm_line`)."""
    from ..engine.online import alarm_line

    def on_alarm(alarm) -> None:
        emit({"kind": "alarm", "run": run, "step": int(alarm.step), "id": alarm.finding.id,
              "line": alarm_line(alarm)})

    return on_alarm

"""Where independent runs execute: in this process, in local worker processes, or as Ray tasks.

Every executor takes the same jobs (a name, a module-level function, its arguments) and hands back,
for each job, either its result or a `Failed` with one error line; a job that raises, a worker that
dies (out of memory, killed) or a lost Ray node fails that job only, and the others go on. Results
reach the driver, which alone writes the run directory, so the report does not depend on where the
runs executed. Each job runs with a fixed number of torch threads, `RUN_THREADS` unless it asked for
more CPUs (Ray's `cpus_per_run`), never a count derived from this machine's cores: a matmul's summation
order, hence its last bits, depends on how many threads split it, and a run near its own margin turns
those bits into a different outcome. So the same job gives the same numbers under every executor and on
every machine with the same torch build.

    with make_executor("ray", address="auto", gpus_per_run=1) as ex:
        results = ex.run([Job("baseline", fn, (cfg,)), ...], on_done=print)

Ray is an optional extra (`pip install -e '.[ray]'`); `local` and `serial` need nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..core.errors import require
from . import live

EXECUTORS = ("local", "ray")
# torch threads per run. One: what a local worker got on the 2-core machines the reference numbers come
# from, and spreading runs over processes (`--workers`) rather than threads keeps every core busy anyway
RUN_THREADS = 1
_job_threads: list[int] = []  # the threads of the job running in this process (call_with_threads), if any


def job_threads() -> int | None:
    """The torch threads the executor gave the job running now in this process; None outside a job."""
    return _job_threads[-1] if _job_threads else None


@dataclass(frozen=True)
class Job:
    name: str
    fn: Callable[..., Any]
    args: tuple = ()


@dataclass(frozen=True)
class Failed:
    """A job that did not return: `error` is one line (`<type>: <message>`)."""

    name: str
    error: str


def error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:300]}"


def call_with_threads(fn: Callable[..., Any], args: tuple, threads: int | None) -> Any:
    """Run one job with `threads` torch threads (RUN_THREADS when None), then give the process its own count
    back (a job may run in the driver); module-level so worker processes and Ray can run it."""
    import torch

    threads = threads or RUN_THREADS
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    _job_threads.append(threads)
    try:
        return fn(*args)
    finally:
        _job_threads.pop()
        torch.set_num_threads(before)


OnDone = Callable[[str, Any], object]


def collect(futures: dict, on_done: OnDone | None) -> dict[str, Any]:
    """Each future's result (or `Failed`) by job name, as they complete; on Ctrl-C the queued ones are dropped."""
    results: dict[str, Any] = {}
    try:
        for fut in as_completed(futures):
            name = futures[fut]
            try:
                results[name] = fut.result()
            except Exception as exc:  # noqa: BLE001 - one run's failure (a raise, a dead worker) is its result
                results[name] = Failed(name, error_line(exc))
            if on_done:
                on_done(name, results[name])
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    return results


def _init_worker(events, listening) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    live.init_worker(events, listening)


class SerialExecutor:
    """Jobs one after another in this process (the default for one worker)."""

    name = "serial"

    def __init__(self, threads: int | None = RUN_THREADS):
        self.threads = threads

    def run(self, jobs: Sequence[Job], on_done: OnDone | None = None) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for job in jobs:
            try:
                results[job.name] = call_with_threads(job.fn, job.args, self.threads)
            except Exception as exc:  # noqa: BLE001 - one run's failure is that run's result
                results[job.name] = Failed(job.name, error_line(exc))
            if on_done:
                on_done(job.name, results[job.name])
        return results

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(SerialExecutor):
    """Jobs in `workers` spawned processes on this machine, RUN_THREADS torch threads each (not a share of
    this machine's cores: the numbers would then depend on the machine)."""

    name = "local"

    def __init__(self, workers: int):
        super().__init__(RUN_THREADS)
        # spawn, not fork: forking a process that already ran torch's thread pools can deadlock.
        # Workers ignore SIGINT: Ctrl-C reaches the whole process group and the driver alone reports it.
        # Their runs' live events (progress, alarms) come back on a queue (diagnose.lab.live)
        ctx = mp.get_context("spawn")
        self.channel = live.WorkerChannel(ctx)
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(self.channel.queue, self.channel.flag))

    def run(self, jobs: Sequence[Job], on_done: OnDone | None = None) -> dict[str, Any]:
        if len(jobs) == 1:  # not worth a process hop
            return super().run(jobs, on_done)
        futures = {self.pool.submit(call_with_threads, j.fn, j.args, self.threads): j.name for j in jobs}
        with self.channel.forwarding(live.current_sink()):  # while the driver listens
            results = self._collect(futures, on_done)
        return {j.name: results[j.name] for j in jobs}

    def _collect(self, futures: dict, on_done: OnDone | None) -> dict[str, Any]:
        try:
            return collect(futures, on_done)
        except BaseException:  # Ctrl-C: queued runs were dropped; running ones are stopped, not waited for
            self._stop_workers()
            raise

    def _stop_workers(self) -> None:
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            proc.terminate()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


POLL_SECONDS = 0.2  # how often the driver takes the Ray tasks' live events while someone listens


def ray_job(fn: Callable[..., Any], args: tuple, threads: int | None, events: Any = None) -> Any:
    """A Ray task: `call_with_threads`, its live events (`diagnose.lab.live.emit`) sent to the driver's
    `events` actor when someone listens there (None: nobody does)."""
    if events is not None:
        live.init_worker(_ToActor(events), _Listening())
    try:
        return call_with_threads(fn, args, threads)
    finally:
        if events is not None:  # a Ray worker runs later tasks too: no stale channel
            live.init_worker(None, None)


class _ToActor:
    def __init__(self, actor: Any):
        self.actor = actor

    def put(self, event: dict) -> None:
        import ray

        ray.get(self.actor.put.remote(event))  # held before the task returns: the driver shows it before the end


class _Listening:
    @staticmethod
    def is_set() -> bool:
        return True  # the task was submitted while the driver listened


class _Events:
    """The Ray actor that holds the tasks' live events until the driver takes them."""

    def __init__(self):
        self.items: list[dict] = []

    def put(self, event: dict) -> None:
        self.items.append(event)

    def take(self) -> list[dict]:
        items, self.items = self.items, []
        return items


class RayExecutor(SerialExecutor):
    """Each job a Ray task asking for `cpus_per_run` CPUs and `gpus_per_run` GPUs.

    `address` None starts a local Ray instance (stopped again on close); "auto" or "ray://host:10001"
    joins an existing cluster. A Ray instance already initialised in this process is used as it is.
    While a sink listens (`diagnose.lab.live`), the tasks send their live events (progress, alarms) to an
    actor that the driver empties every `POLL_SECONDS` into the sink, a run's events before its end.
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_run: int = 1, gpus_per_run: float = 0):
        self.ray = require("ray", "ray", "--executor ray")
        super().__init__(cpus_per_run)
        self.started = False
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = os.cpu_count() or 1
            self.ray.init(address=address, **kwargs)
            self.started = True
        self.remote = self.ray.remote(ray_job).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        self.events: Any = None  # the _Events actor, made when a sink first listens

    def run(self, jobs: Sequence[Job], on_done: OnDone | None = None) -> dict[str, Any]:
        ray = self.ray
        sink = live.current_sink()
        if sink is not None and self.events is None:
            self.events = ray.remote(_Events).options(num_cpus=0).remote()
        events = self.events if sink is not None else None
        refs = {self.remote.remote(j.fn, j.args, self.threads, events): j.name for j in jobs}
        pending, results = list(refs), {}
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=POLL_SECONDS if events else None)
                if events is not None:
                    self._deliver(events, sink)
                if not done:
                    continue
                name = refs[done[0]]
                try:
                    results[name] = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:  # the job raised: report its own exception
                    cause = getattr(exc, "cause", None)
                    results[name] = Failed(name, error_line(cause) if cause is not None else error_line(exc))
                except Exception as exc:  # noqa: BLE001 - worker crashed, out of memory, node lost
                    results[name] = Failed(name, error_line(exc))
                if on_done:
                    on_done(name, results[name])
        except BaseException:  # Ctrl-C (or anything else): cancel what is still queued or running
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return {j.name: results[j.name] for j in jobs}

    def _deliver(self, events: Any, sink: live.Sink) -> None:
        try:
            taken = self.ray.get(events.take.remote())
        except Exception:  # noqa: BLE001 - progress is a courtesy: the runs go on
            return
        for event in taken:
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - a console failure must not stop the runs
                pass

    def close(self) -> None:
        if self.events is not None and not self.started:  # an instance we joined keeps running: not our actor
            try:
                self.ray.kill(self.events)
            except Exception:  # noqa: BLE001 - already gone with its cluster
                pass
        self.events = None
        if self.started:
            self.ray.shutdown()
            self.started = False


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None, cpus_per_run: int = 1,
                  gpus_per_run: float = 0) -> SerialExecutor:
    """`local` with one worker runs in this process; `ray` needs the `ray` extra (ImportError otherwise)."""
    if kind == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run)
    if kind != "local":
        raise ValueError(f"--executor {kind!r}: expected one of {', '.join(EXECUTORS)}")
    workers = max(1, min(workers, os.cpu_count() or 1))
    return LocalExecutor(workers) if workers > 1 else SerialExecutor()


class ThreadExecutor(SerialExecutor):
    """Jobs on `workers` threads of this process: for jobs that only wait on a child process (a user's script
    under `diagnose ablate --`), where a worker process would cost an interpreter start for nothing."""

    name = "local"

    def __init__(self, workers: int, threads: int | None = None):
        super().__init__(threads)
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def run(self, jobs: Sequence[Job], on_done: OnDone | None = None) -> dict[str, Any]:
        results = collect({self.pool.submit(job.fn, *job.args): job.name for job in jobs}, on_done)
        return {j.name: results[j.name] for j in jobs}  # Ctrl-C: the caller stops the running jobs

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

"""The online rules of `diagnose.watch` in a child process: the training process only ships new records.

Why a process and not a thread: a thread shares the training process's GIL, and pandas holds it for
most of a rule pass, so a training step returning from a kernel waits for it. Measured with
`benchmarks/overhead.py` on the perceiver reference (CPU, 1 torch thread, 2 cores): rules in a thread
took back almost none of their 2% of the step time (`watch_cheap` 1.042 vs 1.048 inline). A child
process has its own interpreter on another core; the training thread pays for pickling the rows that
arrived since the last evaluation and writing them to a pipe.

The child (``python -m diagnose.engine.rule_server``) imports the rule catalogue and pandas, not torch, keeps
its own copy of the records (the new rows appended, or the whole buffer again after the parent thinned
it) and answers each request with the evaluation: every finding and whether its rule deems it worth
an alarm (`diagnose.engine.monitor.evaluate_rules`), plus the CPU time it took. Protocol: length-prefixed
pickles on the child's stdin/stdout, both ends this package (the child is started by the parent,
with pipes no one else holds); the child's own prints go to stderr.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO

from ..core.records import COLUMNS, frame_of
from .monitor import evaluate_rules

HEADER = struct.Struct("<Q")
CLOSE_TIMEOUT_S = 10.0


class RuleProcessDied(RuntimeError):
    """The child ended before answering (killed, out of memory, failed to start)."""


def _send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(stream: BinaryIO) -> Any:
    """The next message; raises EOFError when the other end closed."""
    head = _read_exact(stream, HEADER.size)
    if head is None:
        raise EOFError
    body = _read_exact(stream, HEADER.unpack(head)[0])
    if body is None:
        raise EOFError
    return pickle.loads(body)


class RuleProcess:
    """Parent side: the child process, shared by every watch of this process (`shared`); requests are
    answered in order, and a reader thread (blocked on the pipe, not on the GIL) resolves their
    Futures. Each watch talks to it through its own `RuleClient`."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the checkout or site-packages holding `diagnose`
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.pid = os.getpid()
        self.proc = subprocess.Popen([sys.executable, "-m", "diagnose.engine.rule_server"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        self._futures: deque[Future] = deque()
        self._lock = threading.Lock()
        self._sessions = 0
        self._reader = threading.Thread(target=self._read, name="diagnose-rules-reader", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and self._reader.is_alive()

    def new_session(self) -> int:
        with self._lock:
            self._sessions += 1
            return self._sessions

    def request(self, session: int, reset: bool, columns: dict[str, list], ctx) -> Future:
        fut: Future = Future()
        with self._lock:
            if self.proc.poll() is not None:
                raise RuleProcessDied(f"diagnose.engine.rule_server exited with code {self.proc.returncode}")
            self._futures.append(fut)
            try:
                _send(self.proc.stdin, ("rows", session, reset, columns, ctx))
            except (BrokenPipeError, OSError, ValueError) as exc:
                self._futures.pop()
                raise RuleProcessDied(f"diagnose.engine.rule_server is gone: {exc}") from None
        return fut

    def end_session(self, session: int) -> None:
        """The child forgets the session's records (no reply)."""
        with self._lock:
            try:
                _send(self.proc.stdin, ("drop", session))
            except (BrokenPipeError, OSError, ValueError):
                pass

    def _read(self) -> None:
        while True:
            try:
                msg = _recv(self.proc.stdout)
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                break
            with self._lock:
                fut = self._futures.popleft() if self._futures else None
            if fut is None:
                continue
            if msg[0] == "ok":
                fut.set_result((msg[1], msg[2]))
            else:
                fut.set_exception(RuntimeError(f"rule evaluation failed in diagnose.engine.rule_server:\n{msg[1]}"))
        with self._lock:
            pending, self._futures = list(self._futures), deque()
        for fut in pending:
            fut.set_exception(RuleProcessDied("diagnose.engine.rule_server ended before answering"))

    def close(self) -> None:
        """Ask the child to stop and wait for it (killed after CLOSE_TIMEOUT_S)."""
        with self._lock:
            try:
                _send(self.proc.stdin, None)
                self.proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
        try:
            self.proc.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=CLOSE_TIMEOUT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


_SHARED: RuleProcess | None = None
_SHARED_LOCK = threading.Lock()


def shared() -> RuleProcess:
    """This process's rule process, started on first use (again if it died, or after a fork: a forked
    child does not share its parent's pipes); stopped at interpreter exit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED.pid != os.getpid() or not _SHARED.alive:
            if _SHARED is not None and _SHARED.pid == os.getpid():
                _SHARED.close()
            _SHARED = RuleProcess()
        return _SHARED


def _stop_shared() -> None:
    if _SHARED is not None and _SHARED.pid == os.getpid():
        _SHARED.close()


atexit.register(_stop_shared)


class RuleClient:
    """One watch's view of the rule process: ships the rows its buffer gained since its last request."""

    def __init__(self, server: RuleProcess | None = None) -> None:
        self.server = server or shared()
        self.session = self.server.new_session()
        self._sent, self._dropped = 0, None

    def submit(self, buffer, ctx) -> Future:
        """Future of (evaluation, CPU seconds) of the records of `buffer` (probes._records.RecordBuffer)
        so far: the rows added since the last request, or all of them after the buffer thinned; rows whose
        values are still on their way from a CUDA device come with the next request (no wait here)."""
        buffer.flush(wait=False)
        reset = buffer.dropped != self._dropped
        columns = buffer.columns_since(None if reset else self._sent, wait=False)
        fut = self.server.request(self.session, reset, columns, ctx)
        self._sent, self._dropped = buffer.appended, buffer.dropped
        return fut

    def close(self) -> None:
        self.server.end_session(self.session)


# --- the child -------------------------------------------------------------------------------------


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    sessions: dict[int, dict[str, list]] = {}
    while True:
        try:
            msg = _recv(requests)
        except EOFError:
            return
        if msg is None:
            return
        if msg[0] == "drop":
            sessions.pop(msg[1], None)
            continue
        _, session, reset, new, ctx = msg
        if reset or session not in sessions:
            columns = sessions[session] = {c: list(new[c]) for c in COLUMNS}
        else:
            columns = sessions[session]
            for c in COLUMNS:
                columns[c].extend(new[c])
        t0 = time.process_time()
        try:  # the frame probes._records.frame_of builds (probes imports torch, so it is not imported here)
            frame = frame_of(columns)
            reply = ("ok", evaluate_rules(frame, ctx), time.process_time() - t0)
        except Exception:  # noqa: BLE001 - a rule's bug goes back to the parent, which raises it
            reply = ("error", traceback.format_exc(limit=8))
        _send(replies, reply)


def main() -> None:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the replies
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()

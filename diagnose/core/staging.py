"""A directory written as a whole: `staged` yields a temporary sibling and renames it into place at the
end, so a reader (or an interrupted run) only ever sees the previous complete directory or the new one.
`committed_dirs` collects what was completed, so an interrupt can say what was kept.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from .errors import OutputError
from .files import honour_umask

STAGING_TAG = ".tmp-"  # staging siblings are named .<name>.tmp-XXXX (hidden, never a run directory)


_COMMITTED: ContextVar[list[str] | None] = ContextVar("diagnose_committed_dirs", default=None)


@contextmanager
def committed_dirs() -> Iterator[list[str]]:
    """Collect the run directories completed inside the block (what an interrupt can say was kept)."""
    written: list[str] = []
    token = _COMMITTED.set(written)
    try:
        yield written
    finally:
        _COMMITTED.reset(token)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C inside a staged write; the message says what was kept."""


def _link_tree(src: Path, dst: Path) -> None:
    """dst mirrors src by hard links (copies where links fail). Writes in a staging directory always
    replace a file (atomic_write_bytes), never modify it in place, so the linked originals stay intact."""
    for entry in os.scandir(src):
        if entry.name.startswith(".") and STAGING_TAG in entry.name:
            continue  # another run's staging directory
        target = dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            target.mkdir()
            honour_umask(target, directory=True)
            _link_tree(Path(entry.path), target)
        else:
            try:
                os.link(entry.path, target)
            except OSError:
                shutil.copy2(entry.path, target)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM received inside the block are re-raised after it. The Python-level handlers
    are swapped (not the thread's signal mask: the kernel may hand a process signal to any other
    thread, e.g. torch's, and Python would still run the handler in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives Python signal handlers
        return
    pending: list[int] = []
    wanted = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) not in (signal.SIG_IGN, None)]
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])  # now handled as it would have been (Ctrl-C -> KeyboardInterrupt)


def _commit(tmp: Path, out: Path) -> None:
    """Swap the finished staging directory in. Ctrl-C is deferred until the previous directory is
    gone, so it lands after a complete swap, never between the two renames."""
    with _signals_deferred():
        previous = None
        if out.exists() or out.is_symlink():
            previous = tmp.with_name(tmp.name.replace(STAGING_TAG, ".old-"))
            os.rename(out, previous)
        os.rename(tmp, out)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)


def _os_step(fn, out: Path, *args) -> None:
    try:
        fn(*args)
    except OSError as exc:  # linking the previous files in, or the final renames
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc.__class__.__name__})") from None


@contextmanager
def staged(out: Path, keep_existing: bool = True) -> Iterator[Path]:
    """Write a run directory as a whole: yield a temporary sibling, rename it to `out` at the end.

    An exception, Ctrl-C or a full disk inside the block removes the staging directory (and any
    parent this call created), so `out` is either the previous complete directory or absent. With
    `keep_existing`, files of an existing `out` that this run does not rewrite are carried over
    (an ablation inside a compare directory, earlier epoch checkpoints).
    """
    out = Path(out)
    if out.is_symlink():  # write where the link points; the user's link stays a link
        out = Path(os.path.realpath(out))
    had_previous = out.is_dir()
    created = [p for p in reversed(out.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{STAGING_TAG}"))
        honour_umask(tmp, directory=True)
    except OSError as exc:
        _remove_created(created)
        why = exc.strerror or exc.__class__.__name__
        raise OutputError(f"{out}: cannot create the run directory ({why})") from None
    kept = f"{out} left as it was (previous complete run)" if had_previous else f"{out} not created"
    written = _COMMITTED.get()
    try:
        if keep_existing and had_previous:
            _os_step(_link_tree, out, out, tmp)
        yield tmp
        _os_step(_commit, out, tmp, out)
    except KeyboardInterrupt:
        if not tmp.exists() and out.is_dir():  # Ctrl-C held off during the swap: the run is complete
            if written is not None:
                written.append(str(out))
            raise Interrupted(f"interrupted: {out} was completely written before it") from None
        _discard(tmp, created)
        raise Interrupted(f"interrupted: nothing half-written; {kept}") from None
    except OutputError as exc:
        _discard(tmp, created)
        raise OutputError(f"{exc}; {kept}") from None
    except BaseException:
        _discard(tmp, created)
        raise
    if written is not None:
        written.append(str(out))


def _discard(tmp: Path, created: list[Path]) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    _remove_created(created)


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):  # deepest first; only if still empty
        try:
            path.rmdir()
        except OSError:
            break


class Pinned:
    """A run directory opened once, written by name relative to that open directory: if the path is later
    given to a newer run (a staged swap), writes still land in the directory that was opened (or fail once
    it is removed), never in the newer run. Each write replaces a whole file (a hidden temporary name, then
    a rename), so a reader sees the previous file or the new one. Used by the background plot renderer."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))

    def read(self, name: str) -> bytes:
        fd = os.open(name, os.O_RDONLY, dir_fd=self.fd)
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def write(self, name: str, data: bytes) -> None:
        tmp = f".{name}{STAGING_TAG}{os.getpid()}"  # skipped by _link_tree, like a staging directory
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666, dir_fd=self.fd)  # the umask applies
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Pinned:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Probe records and alarms as dashboard scalars: TensorBoard and Weights & Biases.

A sink is a `Watch` listener: after each observed step it writes the rows that step added, tagged
``diagnose/<probe>/<target>/<metric>`` (stable names that `diagnose logs` reads back), and every new
alarm as a text entry (``diagnose/alarms``) at the step it fired. A rate limit keeps a big model from
flooding the dashboard, which is what users complain about in other tools: rows are written every
`every` steps, at most `max_scalars` per written step, by priority (losses and model-level gradients
first, per-parameter rows last: a 300-tensor model has 1500 per-parameter gradient rows per step).

    w = diagnose.watch(model, optimizer, out="runs/mine")
    TensorBoardSink("runs/mine/tb").attach(w)          # or TensorBoardSink(writer) / WandbSink(run)

Closing the watch writes the rows of the steps after the last written one and closes a writer the sink
made (`watch_closed`), so `diagnose logs runs/mine/tb` reads the run to its last step.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..core.errors import require

# probes in the order their rows are kept when a step has more than max_scalars rows
PRIORITY = ("loss_split", "gradient_flow.model", "collapse", "softmax_entropy", "gradient_flow.layer",
            "latent_stats", "session", "gradient_flow.module", "gradient_flow")


def tag(probe: str, target: str, metric: str) -> str:
    return f"diagnose/{probe}/{target}/{metric}".replace(" ", "_")


class ScalarSink:
    """Base sink: selection, rate limit and alarm text; subclasses write."""

    def __init__(self, every: int = 10, max_scalars: int = 200) -> None:
        if every < 1 or max_scalars < 1:
            raise ValueError("every and max_scalars must be >= 1")
        self.every, self.max_scalars = int(every), int(max_scalars)
        self._seen = 0
        self.written = 0

    def attach(self, watch) -> "ScalarSink":
        self._seen = watch.session.buffer.appended
        self._watch = watch
        watch.add_listener(self)
        return self

    def __call__(self, watch, step: int, alarms: list) -> None:
        self.current_step = step
        for a in alarms:
            f = a.finding
            self.write_text("diagnose/alarms", f"step {a.step}: {f.id} ({f.severity}) {f.target or ''}: {f.message}",
                            a.step)
        if step % self.every:
            return  # rows of skipped steps are written with the next written step (at their own steps)
        self._write_rows(watch)

    def _write_rows(self, watch, wait: bool = False) -> None:
        """The rows added since the last write; per step those whose values reached the host (CUDA values
        still on their way come with the next write), at the end all of them."""
        buf = watch.session.buffer
        rows = buf.since(self._seen, wait)
        self._seen = buf.appended
        rank = {p: i for i, p in enumerate(PRIORITY)}
        rows = sorted(rows, key=lambda r: rank.get(r[1], len(PRIORITY)))[: self.max_scalars]
        self.write_scalars((tag(p, t, m), v, s) for s, p, t, m, v in rows)
        self.written += len(rows)
        self.flush()

    def drain(self) -> None:
        """Write the rows observed since the last written step (the end of the run), once."""
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.session.buffer.flush()
            if watch.session.buffer.appended > self._seen:
                self._write_rows(watch, wait=True)

    def watch_closed(self, watch) -> None:
        """Called by `Watch.close`: the run's last rows are written even when nobody closes the sink (the
        framework callbacks attach one and never see it again); a writer this sink made is closed."""
        self.close()

    def close(self) -> None:
        self.drain()

    def write_scalars(self, items: Iterable[tuple[str, float, int]]) -> None:
        raise NotImplementedError

    def write_text(self, name: str, text: str, step: int) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass


class TensorBoardSink(ScalarSink):
    """Writes to a `torch.utils.tensorboard.SummaryWriter` (yours, e.g. a Lightning logger's
    ``experiment``, or one made for `logdir`)."""

    def __init__(self, writer_or_logdir: Any, every: int = 10, max_scalars: int = 200) -> None:
        super().__init__(every, max_scalars)
        if isinstance(writer_or_logdir, (str, bytes)) or hasattr(writer_or_logdir, "__fspath__"):
            require("tensorboard", "tb", "TensorBoardSink")
            from torch.utils.tensorboard import SummaryWriter

            self.writer, self._own = SummaryWriter(str(writer_or_logdir)), True
        else:
            self.writer, self._own = writer_or_logdir, False

    def write_scalars(self, items):
        for name, value, step in items:
            self.writer.add_scalar(name, value, step)

    def write_text(self, name, text, step):
        self.writer.add_text(name, text, step)

    def flush(self):
        self.writer.flush()

    def close(self):
        """Write the last steps' rows, then close a writer this sink made (again: a no-op)."""
        self.drain()
        if self._own and not getattr(self, "_closed", False):
            self._closed = True
            self.writer.close()


class WandbSink(ScalarSink):
    """Logs to a W&B run (`wandb.run` by default): ``wandb.log({...}, step=step)``; alarms go to a
    ``diagnose/alarms`` text entry. Use ``WANDB_MODE=offline`` where there is no network."""

    def __init__(self, run: Any = None, every: int = 10, max_scalars: int = 200) -> None:
        super().__init__(every, max_scalars)
        wandb = require("wandb", "wandb", "WandbSink")
        self.run = run if run is not None else wandb.run
        if self.run is None:
            raise RuntimeError("WandbSink: no W&B run; call wandb.init(...) first or pass run=")

    # W&B steps must only increase: everything goes to the step being observed (an update/param row
    # belongs to the step before it; TensorBoard gets its exact step)
    def write_scalars(self, items):
        self.run.log({name: value for name, value, _ in items}, step=self.current_step)

    def write_text(self, name, text, step):
        self.run.log({name: text}, step=self.current_step)

"""Where each row's pair sits among the columns of rectangular contrastive logits, read from the loss lines' own
operations (`ops.watch_ops`) while the step is computed.

Logits with more columns than rows score a block of rows against a larger set of candidates. Outside
torch.distributed (where the rank says the offset) the script's own operations say where the block sits:

- the rows are a block of a batch of as many rows as there are columns: a slice `img[r * n:(r + 1) * n]`
  (`narrow`, `chunk`, `split`) of the batch whose other modality forms the columns, or one part of a
  concatenation (a gather written by hand, `cat(shards)`) -> their pairs are the columns at that offset;
- the columns are a concatenation in which exactly one block of as many rows as the logits carries this step's
  gradient, beside blocks that carry none (a bank of detached embeddings of earlier micro-batches, a queue)
  -> the rows' pairs are that block, in order.

Otherwise (candidates of one forward laid out by the data, e.g. [pos, neg] pairs interleaved) the operations do
not say which column is a row's pair, and `located_pairs` returns None.

Marks are attributes on the step's tensors: `_dg_block = (rows of the whole batch, offset)`, `_dg_blocks` (the
blocks of a concatenation: offset, rows, carries gradient), `_dg_cols` (the tensor whose rows are this one's
columns, on a transpose) and `_dg_operands = (rows, columns)` on a matrix product. Row-wise operations that keep
the rows (a scale, a normalisation, a cast) keep the marks.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .ops import Call

# operations that keep each row where it was (their output's row i is a function of input row i)
ROW_WISE = ("mul", "div", "normalize", "float", "half", "bfloat16", "to", "contiguous", "clone", "type_as")
MARKS = ("_dg_block", "_dg_blocks", "_dg_operands")


def mark(t: Any, name: str, value: Any) -> None:
    """Set a mark on a tensor (nothing where a tensor subclass takes no attributes)."""
    if isinstance(t, torch.Tensor):
        try:
            setattr(t, name, value)
        except (AttributeError, RuntimeError):  # a tensor subclass without a __dict__
            pass


def _dim(call: Call, position: int) -> int:
    """The `dim` argument (keyword, or positional at `position`), 0 when not given."""
    dim = call.kwargs.get("dim", call.args[position] if len(call.args) > position else 0)
    return dim if isinstance(dim, int) else -1


def _block_of(x: Any, start: int) -> tuple[int, int]:
    """Rows from `start` of `x`, as a block of the widest batch `x` is known to be part of."""
    whole, offset = getattr(x, "_dg_block", (len(x), 0))
    return whole, offset + start


def _cat(call: Call) -> Any:
    out = call.run()
    tensors = call.args[0] if call.args else call.kwargs.get("tensors")
    if _dim(call, 1) != 0 or not isinstance(out, torch.Tensor) or not isinstance(tensors, (list, tuple)):
        return out
    blocks, offset = [], 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return out
        blocks.append((offset, len(t), bool(t.requires_grad)))
        if not hasattr(t, "_dg_block"):
            mark(t, "_dg_block", (len(out), offset))
        offset += len(t)
    mark(out, "_dg_blocks", tuple(blocks))
    return out


def _getitem(call: Call) -> Any:
    out = call.run()
    x, idx = (call.args + (None,))[:2]
    first = idx[0] if isinstance(idx, tuple) and idx else idx
    if isinstance(x, torch.Tensor) and x.dim() >= 1 and isinstance(first, slice) and first.step in (None, 1):
        start, _, _ = first.indices(len(x))
        mark(out, "_dg_block", _block_of(x, start))
    return out


def _narrow(call: Call) -> Any:
    out = call.run()
    x, dim, start = (call.args + (None, None, None))[:3]
    if isinstance(x, torch.Tensor) and dim == 0 and isinstance(start, int):
        mark(out, "_dg_block", _block_of(x, start))
    return out


def _pieces(call: Call) -> Any:
    """chunk / split along the rows: each piece a block at its offset."""
    out = call.run()
    x = call.args[0] if call.args else None
    if isinstance(x, torch.Tensor) and _dim(call, 2) == 0 and isinstance(out, (list, tuple)):
        offset = 0
        for piece in out:
            mark(piece, "_dg_block", _block_of(x, offset))
            offset += len(piece)
    return out


def _transpose(call: Call) -> Any:
    out = call.run()
    x = call.args[0] if call.args else None
    if not (isinstance(x, torch.Tensor) and x.dim() == 2):
        return out
    mark(out, "_dg_cols", x)
    ops = getattr(x, "_dg_operands", None)
    if ops is not None and ops[1] is not None:  # (rows @ cols.T).T: the columns' rows are its rows now
        mark(out, "_dg_operands", (ops[1], ops[0]))
    return out


def _getset(call: Call) -> Any:
    """Tensor.T / Tensor.mT (a property: its `__get__` goes through the mode)."""
    if getattr(getattr(call.func, "__self__", None), "__name__", "") in ("T", "mT"):
        return _transpose(call)
    return call.run()


def _matmul(call: Call) -> Any:
    out = call.run()
    if len(call.args) == 2 and isinstance(out, torch.Tensor) and out.dim() == 2:
        a, b = call.args
        mark(out, "_dg_operands", (a, getattr(b, "_dg_cols", None)))
    return out


def _row_wise(call: Call) -> Any:
    out = call.run()
    tensors = [a for a in call.args if isinstance(a, torch.Tensor)]
    x = next((a for a in tensors if a.dim() >= 1), None)
    if not isinstance(out, torch.Tensor) or x is None or out.shape[:1] != x.shape[:1]:
        return out
    if any(a is not x and a.numel() != 1 for a in tensors):  # scaled by a number only
        return out
    if getattr(call.func, "__name__", "") == "normalize":
        dim = call.kwargs.get("dim", call.args[2] if len(call.args) > 2 else 1)
        if dim not in (1, -1) and dim != x.dim() - 1:
            return out
    for name in MARKS:
        if hasattr(x, name):
            mark(out, name, getattr(x, name))
    return out


def handlers() -> dict[str, Callable[[Call], Any]]:
    """The `watch_ops` handlers that mark the step's tensors (the mul handler is chained by the caller)."""
    table: dict[str, Callable[[Call], Any]] = {name: _row_wise for name in ROW_WISE}
    table.update({"cat": _cat, "concat": _cat, "concatenate": _cat, "__getitem__": _getitem, "narrow": _narrow,
                  "chunk": _pieces, "split": _pieces, "tensor_split": _pieces, "t": _transpose,
                  "transpose": _transpose, "__get__": _getset, "matmul": _matmul})
    return table


def located_pairs(logits: torch.Tensor) -> torch.Tensor | None:
    """The column of each row's pair in rectangular logits whose operations said where it is, else None."""
    n, c = logits.shape
    ops = getattr(logits, "_dg_operands", None)
    if ops is None:
        return None
    rows, cols = ops
    block = getattr(rows, "_dg_block", None)
    if block is not None and block[0] == c and block[1] + n <= c:
        return torch.arange(n, device=logits.device) + block[1]
    blocks = getattr(cols, "_dg_blocks", None) if cols is not None else None
    if blocks:
        carrying = [b for b in blocks if b[2]]
        if len(carrying) == 1 and carrying[0][1] == n and sum(b[1] for b in blocks) == c:
            return torch.arange(n, device=logits.device) + carrying[0][0]
    return None

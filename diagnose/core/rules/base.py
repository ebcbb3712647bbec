"""What a rule is: a declared unit (ids it can emit with severity, implicated root cause and tier;
the records it reads; its thresholds) with one `check` method.

A record rule reads only the probe records so far (a long frame: step, probe, target, metric, value)
and a small `RunContext` of facts known before the run (candidate count, loss weights, logit-scale
cap, optimizer settings for the evidence). It never sees the future of the run or the reference
model's config, so evaluating it on the records up to step t gives what an offline evaluation gives
on the run truncated at t.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from ..definitions import END_FRAC, END_MIN_POINTS, end_start
from ..findings import SEVERITIES, Finding


@dataclass(frozen=True)
class Emit:
    """One finding id a rule can emit.

    `cause` is the root cause the finding implicates (None: it implicates none, e.g. a bare
    measurement), `tier` its directness (see `diagnose.core.rules.ranking`). Only findings whose severity is
    in `implicates_at` count for the root cause: info never does, and some ids implicate a cause only
    in their most severe form (identical loss components are a logging bug only when not at chance).
    """

    id: str
    severities: tuple[str, ...]
    cause: str | None = None
    tier: int | None = None
    implicates_at: tuple[str, ...] = ("warning", "error")
    # causes whose findings this one accounts for: the mechanism behind them (an exp() overflowing on logits of
    # unnormalised embeddings is why the loss is NaN); when both hold, the explained cause ranks after this one
    explains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert all(s in SEVERITIES for s in self.severities), self
        assert (self.cause is None) == (self.tier is None), self


@dataclass
class RunContext:
    """What a record rule may know about a run besides its records: facts fixed before it starts."""

    name: str
    batch_size: int | None = None  # rows per step on this rank
    candidates: int | None = None  # candidates each row is scored against (batch x world when gathered)
    max_logit_scale: float | None = 100.0  # the clamp on exp(logit_scale), when there is one
    weights: dict[str, float] = field(default_factory=dict)  # loss weights, when known
    optimizer: dict[str, Any] = field(default_factory=dict)  # lr, weight_decay, ... (quoted as evidence)

    @property
    def pool(self) -> int | None:
        return self.candidates or self.batch_size


class Rule:
    """Subclasses declare `emits`, `needs`, `thresholds`, `topic` and implement `check`.

    `needs`: (probe, metric) pairs the rule reads ("*" for any metric); a rule whose needed records
    are absent returns no finding. `thresholds`: {constant name: value}, each defined with a comment
    on its origin in the rule's module.
    """

    topic: ClassVar[str] = ""
    kind: ClassVar[str] = "records"  # records | checkpoint | logs: what `check` receives
    emits: ClassVar[tuple[Emit, ...]] = ()
    needs: ClassVar[tuple[tuple[str, str], ...]] = ()
    thresholds: ClassVar[dict[str, float]] = {}

    @property
    def name(self) -> str:
        return type(self).__name__

    def check(self, records: pd.DataFrame, ctx: RunContext) -> list[Finding]:
        raise NotImplementedError

    def alarm(self, finding: Finding, records: pd.DataFrame) -> bool:
        """Whether an error finding that holds on the records so far is worth a live alarm. By default
        yes: the condition is abnormal whenever it holds. Rules whose condition is normal at
        initialisation override this to ask for evidence that the run did not leave it."""
        return True

    def __call__(self, records, ctx) -> list[Finding]:
        try:
            out = self.check(records, ctx)
        except Exception as exc:  # noqa: BLE001 - one rule's bug must not end the user's run nor hide the others
            if os.environ.get(STRICT_ENV):
                raise
            note_failure(self.name, exc)
            return []
        declared = {e.id: e for e in self.emits}
        for f in out:  # a rule emits only what it declares, at a declared severity
            e = declared.get(f.id)
            if e is None or f.severity not in e.severities:
                raise AssertionError(f"{self.name} emitted undeclared {f.id}/{f.severity}")
        return out


# --- a rule that raises ------------------------------------------------------------------------------

EXP_SAFE = 50.0  # exp() of a loss read as a count of candidates only below this (e^50 ~ 5e21; exp(710) overflows)
STRICT_ENV = "DIAGNOSE_STRICT_RULES"  # set (the test suite does): a rule's exception propagates
_failures = threading.local()  # per thread: the failures noted while `collect_failures` is open
_warned: set[str] = set()


def note_failure(rule: str, exc: BaseException) -> None:
    """A rule raised on these records: its findings are left out, the evaluation goes on; said once per rule and
    error on stderr, and kept for the run's summary while `collect_failures` is open."""
    text = f"{rule}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    seen = getattr(_failures, "seen", None)
    if seen is not None and text not in seen:
        seen.append(text)
    if text not in _warned:
        _warned.add(text)
        print(f"diagnose: rule {text} (a bug in diagnose: its findings are left out; the other rules ran)",
              file=sys.stderr)


class collect_failures:
    """`with collect_failures() as failed:` the rules that raised in the block, as `note_failure` wrote them."""

    def __enter__(self) -> list[str]:
        self._outer = getattr(_failures, "seen", None)
        _failures.seen = []
        return _failures.seen

    def __exit__(self, *exc) -> None:
        _failures.seen = self._outer


# --- record access ---------------------------------------------------------------------------------


# per thread, one entry: the (probe, metric) groups of the frame the rules last read (`diagnose.watch`
# evaluates in a background thread while the training thread may evaluate too, e.g. at close). Record
# frames are treated as immutable: a frame changed in place keeps its stale index (copy it first)
_INDEX = threading.local()


def _groups(df: pd.DataFrame) -> dict:
    """(probe, metric) -> rows, built once per frame: every rule selects from the same records, and a
    string comparison over the whole frame per selection would dominate the cost of a rule pass."""
    ref = getattr(_INDEX, "frame", None)
    if ref is not None and ref() is df and getattr(_INDEX, "rows", None) == len(df):
        return _INDEX.groups
    groups = {k: g for k, g in df.groupby(["probe", "metric"], sort=False)} if len(df) else {}
    _INDEX.frame, _INDEX.rows, _INDEX.groups = weakref.ref(df), len(df), groups
    return groups


def select(df: pd.DataFrame, probe: str, metric: str | None = None, target: str | None = None) -> pd.DataFrame:
    if metric is None:
        parts = [g for (p, _), g in _groups(df).items() if p == probe]
        sel = pd.concat(parts) if parts else df.iloc[0:0]
    else:
        sel = _groups(df).get((probe, metric), df.iloc[0:0])
    return sel[sel["target"] == target] if target is not None else sel


def grad_is_none(df: pd.DataFrame) -> pd.DataFrame:
    """The gradient probe's per-parameter `grad_is_none` rows, without the steps on which no parameter held a
    gradient when some other step had one: such a step (observe() called before the first backward) says nothing
    about which parameters the loss reaches. Where no step ever had one, every row stays (the watched parameters
    are not the ones the loss reaches: a copy of the model on its path), unless those parameters moved between the
    steps read: then the gradients were cleared before each observe() and no row says anything."""
    none = select(df, "gradient_flow", "grad_is_none")
    with_grad = set(select(df, "gradient_flow", "grad_norm")["step"])
    if len(none) and with_grad:
        return none[none["step"].isin(with_grad)]
    if len(none) and _moved(df, set(none["target"])):  # gradients came and went between observes: no reading
        return none.iloc[0:0]
    return none


def _moved(df: pd.DataFrame, names: set[str]) -> bool:
    """Whether any of these parameters' norms changed between the steps read (optimizer.zero_grad() called before
    observe(): the parameters moved, so they had gradients the probe came too late to see)."""
    pn = select(df, "gradient_flow", "param_norm")
    pn = pn[pn["target"].isin(names)]
    if pn.empty:
        return False
    spread = pn.groupby("target")["value"].agg(["min", "max"])
    return bool(((spread["max"] - spread["min"]) > 1e-6 * spread["max"].abs().clip(lower=1e-12)).any())


def series(df: pd.DataFrame, probe: str, target: str, metric: str) -> pd.Series:
    """Values of one (probe, target, metric) by step (mean of repeats), sorted by step."""
    return select(df, probe, metric, target).groupby("step")["value"].mean().sort_index()


def targets(df: pd.DataFrame, probe: str, metric: str) -> list[str]:
    return sorted(select(df, probe, metric)["target"].unique())


def window(s: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    """The end-of-run window (`diagnose.core.definitions`) of a step-indexed series or frame."""
    return s.iloc[end_start(list(s.index)):]


def finite(s: pd.Series) -> pd.Series:
    return s[pd.notna(s.values) & (s.abs() != math.inf).values] if len(s) else s


def saved_share(df: pd.DataFrame, full: str, counterfactual: str) -> pd.Series:
    """Per step that has both contrastive-logits readings: the share of the `full` loss that the `counterfactual`
    on the same step's tensors takes away, (full - counterfactual) / full. Steps where full <= 0 are left out."""
    f = finite(series(df, "contrastive", "logits", full))
    c = series(df, "contrastive", "logits", counterfactual)
    return ((f - c.reindex(f.index)) / f.where(f > 0)).dropna()


def span(s: pd.Series) -> list[int]:
    return [int(s.index[0]), int(s.index[-1])] if len(s) else []


def rnd(x: float, digits: int = 4) -> float:
    x = float(x)
    return float(round(x, digits)) if math.isfinite(x) else x


PRIMARY_LOSS = "loss_clip"  # the contrastive loss a verdict is about, when a run logs several


def primary_component(df: pd.DataFrame) -> str:
    """`loss_clip` when recorded, else the first component recorded with a chance value."""
    comps = list(dict.fromkeys(select(df, "loss_split", "chance")["target"]))
    return PRIMARY_LOSS if PRIMARY_LOSS in comps or not comps else comps[0]


def end_loss(df: pd.DataFrame, component: str | None = None) -> tuple[float, float]:
    """(mean of `component` (default: the primary one) over the end window, its chance ln B) so far."""
    component = component or primary_component(df)
    values, chance = series(df, "loss_split", component, "value"), series(df, "loss_split", component, "chance")
    if values.empty or chance.empty:
        return float("nan"), float("nan")
    return float(window(values).mean()), float(chance.iloc[-1])


__all__ = ["END_FRAC", "END_MIN_POINTS", "PRIMARY_LOSS", "primary_component", "Emit", "Rule", "RunContext",
           "end_loss", "finite", "rnd", "select",
           "series", "span", "targets", "window"]

"""The typed run summary: what every producer (train, instrumented runs, ablation runs, `diagnose.watch`,
checkpoint, logs) builds and every report renders. `summary.json` is `Summary.to_dict()`; its keys
are stable (tests and CI read them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .definitions import LEARNED_LOSS_FRACTION, LEARNED_RECALL_FACTOR, at_chance, end_start, learned, relative_gap
from .errors import ConfigError
from .findings import finding_counts, severity_rank
from .rules.base import RunContext

# open_clip clamps exp(logit_scale) at 100; used when a run does not state its own cap.
DEFAULT_MAX_LOGIT_SCALE = 100.0


@dataclass
class Verdict:
    label: str
    learned: bool
    loss_over_chance: float | None
    r1_over_chance: float | None
    margins: dict[str, float] = field(default_factory=lambda: {"loss_fraction_of_lnB": LEARNED_LOSS_FRACTION,
                                                              "r1_factor_over_chance": LEARNED_RECALL_FACTOR})


def judge(clip: float | None, chance: float | None, r1: float | None = None, chance_r1: float | None = None) -> Verdict:
    """Learned / at chance / above chance / partly learned / diverged, from the final CLIP loss and R@1."""
    clip = float("nan") if clip is None else float(clip)
    ratio = clip / chance if chance and math.isfinite(clip) else None
    r1_ratio = r1 / chance_r1 if r1 is not None and chance_r1 and math.isfinite(r1) else None
    gap = relative_gap(clip, chance) if chance else float("nan")
    if not math.isfinite(clip):
        label = "diverged (non-finite loss)"
    elif at_chance(clip, chance):
        label = "did not learn (loss at chance)"
    elif gap > 0:
        label = "did not learn (loss above chance)"
    elif learned(clip, chance, r1, chance_r1):
        label = "learned" if r1 is not None else "learned (loss; no held-out retrieval measured)"
    else:
        label = "partly learned (below chance, short of the learning margin)"
    if r1 is not None and not math.isfinite(r1) and math.isfinite(clip):
        label += "; held-out retrieval is non-finite"
    return Verdict(label, label.startswith("learned") and learned(clip, chance, r1, chance_r1), ratio, r1_ratio)


def end_of_run(history: list[dict[str, float]]) -> tuple[dict[str, float], list[int]]:
    """Mean of every loss column over the end-of-run window (`definitions`), and the window's steps."""
    if not history:
        return {}, []
    window = history[end_start([int(row["step"]) for row in history]):]
    keys = [k for k in window[0] if k.startswith("loss") or k == "total"]
    return ({k: float(sum(row[k] for row in window) / len(window)) for k in keys},
            [int(window[0]["step"]), int(window[-1]["step"])])


_CORE = ("name", "config", "config_source", "scale", "seed", "steps", "steps_per_epoch", "batch_size", "candidates",
         "chance_loss", "final_loss", "final_window_steps", "retrieval", "seconds", "kind")


@dataclass
class RunSummary:
    name: str
    kind: str = "instrumented"  # train | instrumented | ablation | watch | checkpoint | logs
    config: str | None = None
    config_source: str | None = None
    scale: str | None = None
    seed: int | None = None
    steps: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None  # rows per step (per rank)
    candidates: int | None = None  # candidates each row is scored against (batch x world when gathered)
    chance_loss: float | None = None  # ln(candidates)
    final_loss: dict[str, float] = field(default_factory=dict)  # end-of-run means
    final_window_steps: list[int] = field(default_factory=list)
    retrieval: dict[str, float] = field(default_factory=dict)  # r@K, chance@K (held-out), when measured
    seconds: float | None = None
    resolved_config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] | None = None
    verdict: Verdict | None = None
    root_causes: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # producer-specific keys, flattened into the dict

    def judge(self, loss: float | None = None, basis: str | None = None) -> Verdict | None:
        """The verdict from the end-of-run CLIP loss, or from `loss` measured otherwise (`basis` says how; it
        is appended to the label)."""
        if self.chance_loss is None:
            return None
        r = self.retrieval
        comps = [k for k in self.final_loss if k.startswith("loss_")]
        main = self.final_loss.get("loss_clip", self.final_loss.get(comps[0]) if comps else None)
        self.verdict = judge(main if loss is None else loss, self.chance_loss, r.get("r@1"), r.get("chance@1"))
        if basis:
            self.verdict.label += f" (from {basis})"
        return self.verdict

    def context(self) -> RunContext:
        """What the rules may know about this run (nothing measured during it)."""
        cfg = self.resolved_config
        opt = cfg.get("optimization", {})
        losses = cfg.get("losses", {})
        return RunContext(self.name, self.batch_size, self.candidates or self.batch_size,
                          losses.get("max_logit_scale", DEFAULT_MAX_LOGIT_SCALE) if cfg else
                          self.extra.get("max_logit_scale", DEFAULT_MAX_LOGIT_SCALE),
                          dict(self.extra.get("loss_weights", {})),
                          {k: opt[k] for k in ("lr", "weight_decay", "matrix_lr_multiplier") if k in opt}
                          or dict(self.extra.get("optimizer", {})))

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _CORE}
        if self.resolved_config:
            d["resolved_config"] = self.resolved_config
        if self.overrides is not None:
            d["overrides"] = self.overrides
        if self.verdict is not None:
            d["verdict"] = asdict(self.verdict)
        d["root_causes"] = self.root_causes
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "summary.json") -> "RunSummary":
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ConfigError(f"{source}: a run must be an object with a 'name' string")
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in d.items() if k in names and k not in ("verdict", "extra")}
        extra = {k: v for k, v in d.items() if k not in names}
        for key, typ in (("final_loss", dict), ("retrieval", dict), ("resolved_config", dict)):
            if key in known and not isinstance(known[key], typ):
                raise ConfigError(f"{source}: run '{d['name']}': '{key}' must be an object")
        for key in ("batch_size", "candidates", "steps"):
            if known.get(key) is not None and not isinstance(known[key], int):
                raise ConfigError(f"{source}: run '{d['name']}': '{key}' must be an integer")
        if known.get("chance_loss") is not None and not isinstance(known["chance_loss"], (int, float)):
            raise ConfigError(f"{source}: run '{d['name']}': 'chance_loss' must be a number")
        run = cls(**known, extra=extra)
        if isinstance(d.get("verdict"), dict):
            v = d["verdict"]
            run.verdict = Verdict(v.get("label", ""), bool(v.get("learned")), v.get("loss_over_chance"),
                                  v.get("r1_over_chance"))
        return run


@dataclass
class Summary:
    runs: list[RunSummary]
    findings: list[dict] = field(default_factory=list)
    hypotheses: list[dict] = field(default_factory=list)
    command: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)  # ablation, ablation_report, checkpoint, log, coverage, ...

    def counts(self) -> dict[str, int]:
        return finding_counts(self.findings)

    def exit_code(self, fail_on: str) -> int:
        """1 when a finding at or above `fail_on` exists, else 0 (2 is bad input, raised elsewhere)."""
        threshold = severity_rank(fail_on)
        return 1 if any(severity_rank(f["severity"]) >= threshold for f in self.findings) else 0

    def run(self, name: str) -> RunSummary:
        return next(r for r in self.runs if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "findings": self.findings, "hypotheses": self.hypotheses,
                **self.sections, "command": self.command, "environment": self.environment}

    @classmethod
    def from_dict(cls, d: Any, source: str = "summary.json") -> "Summary":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object with 'runs', got {type(d).__name__}")
        runs = d.get("runs")
        if not isinstance(runs, list) or not runs:
            raise ConfigError(f"{source}: 'runs' must be a non-empty list")
        for key in ("findings", "hypotheses"):
            if not isinstance(d.get(key, []), list) or not all(isinstance(f, dict) for f in d.get(key, [])):
                raise ConfigError(f"{source}: '{key}' must be a list of objects")
        sections = {k: v for k, v in d.items() if k not in ("runs", "findings", "hypotheses", "command", "environment")}
        env = d.get("environment", {})
        return cls([RunSummary.from_dict(r, source) for r in runs], list(d.get("findings", [])),
                   list(d.get("hypotheses", [])), str(d.get("command", "")), env if isinstance(env, dict) else {},
                   sections)

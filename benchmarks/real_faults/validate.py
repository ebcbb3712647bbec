"""Check the benchmark's runs WITHOUT the tool: does each fault case really fail to learn where its fix
would, and does each healthy run really learn?

A stand-in `watch` (no probes, no rules) records the losses the script passes to `observe` (and, for a
Lightning run, the `loss` its training_step returns). Per case of a half: the script is run with its
fault and, where its `train` accepts `fixed`, again with `fixed=True`, over the seeds (default 0 1 2).
Per run: final loss = mean of the last 5 recorded steps of the contrastive loss (the `clip` component
when the script names one, else `contrastive`, `loss`, `total`, else the first), its chance level
ln(B) (B: the `candidates` passed to observe when features are gathered, else the batch size), and
final / ln(B). Non-finite losses are reported as null with `nonfinite: true`.

With --healthy: every `healthy.SPECS` run once (its own seed), the same numbers, the wall and CPU time
(one thread: CPU time is the run's cost on an idle machine), and per
family min / median / max of final / ln(B); a run "learned" when final / ln(B) < 0.5.

Prints one JSON object. Usage:
    python benchmarks/real_faults/validate.py [--half dev|test|test2|...|test14] [--seeds 0 1 2] [--only NAME ...] [--out FILE]
    python benchmarks/real_faults/validate.py --healthy [--out FILE]
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

LAST = 5  # steps averaged for the final loss
PREFERRED = ("clip", "contrastive", "loss_contrastive", "loss", "total")
LEARNED = 0.5  # a healthy run must end below this fraction of ln(B)


# -- the stand-in watch ------------------------------------------------------------------------------
class _Session:
    """What `diagnose.watch(...)` returns, recording losses only; every other call does nothing."""

    def __init__(self, batch_size=None, candidates=None):
        self.batch_size, self.candidates = batch_size, candidates
        self.losses: list[dict[str, float]] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def observe(self, step=None, losses=None, *args, batch_size=None, candidates=None, logits=None, **kwargs):
        if batch_size is not None:
            self.batch_size = int(batch_size)
        elif self.batch_size is None and hasattr(logits, "shape") and len(getattr(logits, "shape", ())) == 2:
            self.batch_size = int(logits.shape[0])
        if candidates is not None:
            self.candidates = int(candidates)
        if hasattr(losses, "detach"):  # a bare loss tensor
            losses = {"loss": losses}
        self.losses.append({k: float(v.detach().float()) if hasattr(v, "detach") else float(v)
                            for k, v in (losses or {}).items() if v is not None})
        return []

    def evaluate_retrieval(self, *args, **kwargs):
        return {}

    def __getattr__(self, name):  # data_signal, after_step, ...: accepted, nothing done
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


class Recorder:
    """The `watch` factory handed to a script: `Recorder()(model, optimizer, **kw)`; the sessions it made
    are in `.sessions`. `.callback()` is the Lightning path: a callback recording each step's `loss`."""

    def __init__(self):
        self.sessions: list[_Session] = []

    def __call__(self, model=None, optimizer=None, *args, batch_size=None, candidates=None, **kwargs):
        s = _Session(batch_size, candidates)
        self.sessions.append(s)
        return s

    def callback(self, **kwargs):
        import lightning as L

        session = self()

        class LossRecorder(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                out = outputs if isinstance(outputs, dict) else {"loss": outputs}
                img = out.get("image_embeds")
                session.observe(trainer.global_step, losses={"loss": out["loss"]},
                                batch_size=len(img) if img is not None else len(batch[0]))

        return LossRecorder()


def summarise(rec: Recorder) -> dict:
    """Final loss (mean of the last LAST steps) against ln(B) over the sessions of one run."""
    rows = [r for s in rec.sessions for r in s.losses]
    batch = next((s.batch_size for s in reversed(rec.sessions) if s.batch_size), None)
    cands = next((s.candidates for s in reversed(rec.sessions) if s.candidates), None)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    key = next((k for k in PREFERRED if k in keys), keys[0] if keys else None)
    values = [r[key] for r in rows if key in r]
    tail = values[-LAST:]
    final = statistics.fmean(tail) if tail else None
    nonfinite = final is not None and not math.isfinite(final)
    n = cands or batch
    chance = math.log(n) if n and n > 1 else None
    out = {"steps": len(values), "loss_key": key, "batch": batch,
           "final": None if final is None or nonfinite else round(final, 4),
           "first": round(values[0], 4) if values and math.isfinite(values[0]) else None,
           "ln_b": round(chance, 4) if chance else None,
           "ratio": round(final / chance, 4) if chance and final is not None and not nonfinite else None}
    if cands:
        out["candidates"] = cands
    if nonfinite or any(not math.isfinite(v) for v in values):
        out["nonfinite"] = True
        out["first_nonfinite_step"] = next(i for i, v in enumerate(values) if not math.isfinite(v))
    return out


# -- the halves --------------------------------------------------------------------------------------
from run import case_files, load_case  # the runner's discovery: same folders, same module names


def run_once(train, **kwargs) -> dict:
    rec = Recorder()
    t0, c0 = time.perf_counter(), time.process_time()
    train(rec, **kwargs)
    return {**summarise(rec), "seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2)}


def validate_case(path: Path, half: str, seeds) -> dict:
    mod = load_case(path, half)
    params = inspect.signature(mod.train).parameters
    takes_seed, takes_fixed = "seed" in params, "fixed" in params
    row = {"case": path.stem, "half": half, "family": getattr(mod, "FAMILY", None),
           "ground_truth": getattr(mod, "CAUSE", None), "has_fix": takes_fixed, "seeds": {}}
    for seed in (seeds if takes_seed else [None]):
        kw = {"seed": seed} if takes_seed else {}
        runs = {"fault": run_once(mod.train, **kw)}
        if takes_fixed:
            runs["fix"] = run_once(mod.train, fixed=True, **kw)
        row["seeds"][str(seed)] = runs
    ratios = {k: [r[k]["ratio"] for r in row["seeds"].values() if r.get(k) and r[k]["ratio"] is not None]
              for k in ("fault", "fix")}
    row["ratio_mean"] = {k: round(statistics.fmean(v), 4) if v else None for k, v in ratios.items() if takes_fixed
                         or k == "fault"}
    return row


def validate_healthy() -> dict:
    import healthy

    rows = []
    for spec in healthy.SPECS:
        r = run_once(healthy.train, **spec)
        rows.append({"run": spec, **r, "learned": r["ratio"] is not None and r["ratio"] < LEARNED})
    fams = {}
    for fam in dict.fromkeys(r["run"]["model"] for r in rows):
        rs = [r["ratio"] for r in rows if r["run"]["model"] == fam and r["ratio"] is not None]
        secs = [r["seconds"] for r in rows if r["run"]["model"] == fam]
        cpu = [r["cpu_seconds"] for r in rows if r["run"]["model"] == fam]
        fams[fam] = {"runs": len(secs), "ratio_min": min(rs) if rs else None,
                     "ratio_median": round(statistics.median(rs), 4) if rs else None,
                     "ratio_max": max(rs) if rs else None, "seconds_max": max(secs), "cpu_seconds_max": max(cpu)}
    return {"healthy": rows, "families": fams, "all_learned": all(r["learned"] for r in rows),
            "not_learned": [r["run"] for r in rows if not r["learned"]]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--half", choices=("dev", "test", "test2", "test3", "test4", "test5", "test6", "test7", "test8",
                                       "test9", "test10", "test11", "test12", "test13", "test14", "test15", "test16",
                                       "test17", "test18", "test19", "test20", "test21", "test22",
                                       "test23", "test24", "test25", "test26", "test27",
                                       "test28", "test29", "test30", "test31", "test32", "test33", "test34", "test35"),
                        default="dev")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="*", help="case names (case_*.py stems) of the half")
    ap.add_argument("--healthy", action="store_true", help="validate healthy.SPECS instead of a half's cases")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.healthy:
        result = validate_healthy()
    else:
        files = case_files(args.half)
        if args.only:
            known = {p.stem for p in files}
            unknown = sorted(set(args.only) - known)
            if unknown:
                print(f"--only: unknown case(s) {', '.join(unknown)} in {args.half}/", file=sys.stderr)
                raise SystemExit(2)
            files = [p for p in files if p.stem in args.only]
        result = {"half": args.half, "seeds": args.seeds, "last_steps": LAST,
                  "cases": [validate_case(p, args.half, args.seeds) for p in files]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()

"""`diagnose datasignal FILE`: is there anything to learn in a features file? No training.

The file is the `features` source format (reference_models/data.py): `image_tokens` (N, T, D) or
pooled image features (N, D), `text` (N, Dt), optionally `val_image_tokens`/`val_text` (then the map is
fitted on the first and scored on the val pair), in .safetensors, .pt (weights_only) or .npz.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ...core.findings import severity_rank
from ...core.signal_check import MIN_TEST, PERMUTATIONS, PROBE
from ..console import console
from ..options import FailOnOpt, check_fail_on

DEFAULT_SAMPLE = 4096  # pairs used at most (seeded subsample): the test resolves R@1 ~1% at 2048 held out


def datasignal_command(
    file: Annotated[Path, typer.Argument(help="Features file: image_tokens (N,T,D) or (N,D) and text (N,Dt) "
                                              "[+ val_image_tokens, val_text]; .safetensors, .pt or .npz.")],
    sample: Annotated[int,
                      typer.Option("--sample", min=2 * MIN_TEST,
                                   help="Use at most this many pairs (seeded subsample).")] = DEFAULT_SAMPLE,
    seed: Annotated[Optional[int],
                    typer.Option("--seed", help="Seed of the split, subsample and permutations.")] = None,
    permutations: Annotated[int,
                            typer.Option("--permutations", min=99,
                                         help="Random re-pairings in the permutation test.")] = PERMUTATIONS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    fail_on: FailOnOpt = "error",
) -> None:
    """Is there anything to learn? Held-out retrieval of a closed-form linear map vs chance, no training."""
    check_fail_on(fail_on)
    import pandas as pd

    from ...core.rules.base import RunContext  # the rule catalogue (pandas): only when it runs
    from ...core.rules.data import NoDataSignal
    from ...lab.signal_inputs import check_file  # torch and reference_models: only when it runs

    result = check_file(file, sample, seed or 0, permutations)
    records = pd.DataFrame([{"step": 0, "probe": PROBE, "target": t, "metric": m,
                             "value": v} for t, m, v in result.rows()])
    findings = NoDataSignal()(records, RunContext(file.name))
    if as_json:
        print(json.dumps({"file": str(file), "data_signal": result.to_dict(),
                          "findings": [f.to_dict() for f in findings]}, indent=1))
    else:
        verdict = "signal" if result.significant else "NO signal"
        console.print(f"{file}: {verdict}: held-out R@1 {result.r1:.4f} (image->text {result.i2t_r1:.4f}, text->image "
                      f"{result.t2i_r1:.4f}) vs chance {result.chance_r1:.4f}; permutation p = {result.p_value:.3g} "
                      f"(alpha {result.alpha}); {result.n_fit} pairs fitted, {result.n_test} held out; "
                      f"ridge lambda {result.ridge_lambda:.3g} (GCV)", markup=False)
        for f in findings:
            console.print(f"{f.severity}: {f.id}: {f.message}", markup=False)
    worst = max((severity_rank(f.severity) for f in findings), default=-1)
    raise typer.Exit(1 if worst >= severity_rank(fail_on) else 0)

"""Interventions `diagnose ablate -- python train.py` applies to a user's unmodified script through its
watch (`diagnose.engine.ablation_env`): one module per kind, every class registered here, once.

`CATALOGUE` maps an intervention's name to its class; `for_cause(cause_id, findings)` lists those that test a cause,
those answering one of the cause's findings first.
"""

from __future__ import annotations

from .attention import AttentionBatchFirst
from .autocast_cache import ClearAutocastCache
from .base import Intervention, NotApplicable
from .batch_view import BatchFirstView
from .eps import DefaultEps
from .finite_masks import FiniteMasks
from .fp32_outputs import Fp32Outputs
from .gather import GatherWithGrad, LocalGradInGather
from .gather_layout import SplitGatherByRank
from .gathered_scale import ScaleGatheredGrad
from .gradients import ClipGrad
from .inputs import CentreInputs
from .logits import MaskDuplicates
from .lr import HoldLr, LrDown, LrUp, Warmup
from .no_grad import GradThroughNoGrad
from .normalise import NormaliseRows
from .outside_updates import UndoOutsideUpdates
from .own_step import OwnStepOff
from .parameters import AddMissingParams, Reinit, Unfreeze
from .precision import Fp32MasterWeights
from .probabilities import LogProbabilities
from .reinit_constant import ReinitConstant
from .reinit_nonfinite import ReinitNonfinite
from .rescale_logits import RescaleLogits
from .scaler import ScalerStep
from .schedule import StepSchedule
from .shuffle import ShuffleData
from .stale_optimizer import RelinkOptimizer
from .standardise import StandardiseInputs
from .step_optimizer import StepOptimizer
from .targets import DiagonalTargets
from .temperature import FixTemperature
from .unscale_clip import UnscaleBeforeClip
from .weight_decay import NoWeightDecay
from .wide_exp import WideExp
from .zero_division import GuardZeroDivision
from .zero_grad_order import ZeroGradAfterStep

CATALOGUE: dict[str, type[Intervention]] = {cls.name: cls for cls in (
    LrDown, LrUp, Warmup, HoldLr, StepSchedule, FixTemperature, RescaleLogits, LogProbabilities, AddMissingParams,
    RelinkOptimizer, Unfreeze, GradThroughNoGrad, LocalGradInGather, GatherWithGrad, CentreInputs, StandardiseInputs,
    Reinit, ReinitConstant, DiagonalTargets, SplitGatherByRank, NormaliseRows, MaskDuplicates, ShuffleData, ClipGrad,
    ScalerStep, Fp32MasterWeights, Fp32Outputs, GuardZeroDivision, NoWeightDecay, UndoOutsideUpdates,
    AttentionBatchFirst, DefaultEps, FiniteMasks, ReinitNonfinite, ClearAutocastCache, WideExp,
    BatchFirstView, ScaleGatheredGrad, OwnStepOff, UnscaleBeforeClip, ZeroGradAfterStep, StepOptimizer)}


def for_cause(cause: str, findings: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The fixes testing `cause`; those that answer one of `findings` (the cause's findings in a run) first."""
    names = [name for name, cls in CATALOGUE.items() if cause in cls.tests]
    return sorted(names, key=lambda n: not set(CATALOGUE[n].answers) & set(findings))


def make(name: str, params: dict | None = None) -> Intervention:
    if name not in CATALOGUE:
        raise ValueError(f"--fix {name!r}: unknown fix; expected one of {', '.join(CATALOGUE)}")
    return CATALOGUE[name](**(params or {}))


__all__ = ["CATALOGUE", "Intervention", "NotApplicable", "for_cause", "make"]


def markdown_table() -> str:
    """The catalogue as the table in docs/ablate.md (checked by tests/engine/test_interventions.py)."""
    rows = ["| fix | tests (root cause) | what it changes | parameters |", "|---|---|---|---|"]
    for name, cls in CATALOGUE.items():
        params = ", ".join(f"`{k}={v}`" for k, v in cls.defaults.items()) or "-"
        rows.append(f"| `{name}` | {', '.join(f'`{c}`' for c in cls.tests)} | {cls.changes} | {params} |")
    return "\n".join(rows)

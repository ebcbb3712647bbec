"""Reference implementation of the seed's two alignment architectures, losses, data and training."""

from .config import (
    ALIASES,
    AlignmentConfig,
    ConfigError,
    config_from_dict,
    dump_config,
    load_config,
)
from .data import SyntheticPairs, build_data
from .losses import AlignmentLoss, LossOutput, chance_loss, symmetric_infonce
from .model import AlignmentModel, build_model
from .scales import SCALES, apply_scale
from .train import Callback, StepInfo, TrainResult, evaluate_retrieval, train

__all__ = [
    "ALIASES", "SCALES", "AlignmentConfig", "ConfigError", "apply_scale", "config_from_dict",
    "dump_config", "load_config", "SyntheticPairs", "build_data", "AlignmentLoss", "LossOutput",
    "chance_loss", "symmetric_infonce", "AlignmentModel", "build_model", "Callback", "StepInfo",
    "TrainResult", "evaluate_retrieval", "train",
]

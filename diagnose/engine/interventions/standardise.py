"""standardise_inputs: centre the model's input features and divide them by their spread (tests
shared_input_component).

`centre_inputs` removes a shared offset; raw ranges (pixels 0-255, a sensor's digital numbers per band) also
carry a scale that dwarfs the content after the offset is gone. The same entry points (forward pre-hook,
``encode_image``, ``get_image_features``), the same running statistics (momentum 0.9, updated in training mode
only), per channel for (B, C, H, W) images, else per feature over every other axis: x -> (x - mean) / std, the
standardisation a data pipeline does with its dataset's mean and std.
"""

from __future__ import annotations

from typing import Any

import torch

from .inputs import MOMENTUM, CentreInputs

STD_FLOOR = 1e-6  # a constant feature is left centred, not blown up


class StandardiseInputs(CentreInputs):
    name = "standardise_inputs"
    tests = ("shared_input_component",)
    changes = ("the model's input features standardised by a running mean and std per channel / feature (forward "
               "pre-hook; encode_image, get_image_features)")

    def setup(self, watch: Any) -> None:
        self._std: torch.Tensor | None = None
        super().setup(watch)

    def _transform(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        with torch.no_grad():
            flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 4 else \
                x.detach().reshape(-1, x.shape[-1]).t()
            batch_std = flat.std(dim=1)
            if x.dim() == 4:
                batch_std = batch_std.reshape(-1, 1, 1)
            if self._std is None:
                self._std = batch_std
            elif training:
                self._std = MOMENTUM * self._std + (1 - MOMENTUM) * batch_std
        return super()._transform(x, training) / self._std.clamp_min(STD_FLOOR)

    def _changed(self) -> bool:
        return super()._changed() or bool(self._std.clamp_min(STD_FLOOR).ne(1).any())

    def _done(self, step: int) -> str:
        return (f"standardised the input features (running mean and std over {self._std.numel()} channels, median "
                f"std {float(self._std.median()):.3g} at step {step})")

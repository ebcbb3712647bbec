"""centre_inputs: subtract a running mean from the model's input features (tests shared_input_component).

A forward pre-hook on the model (and on its ``encode_image`` when the script calls that instead of
``forward``) takes the first floating-point tensor argument (the patch tokens or pooled features; token ids
are integers and are left alone) and subtracts a running mean over every axis but the last (momentum
0.9, updated in training mode only). If by the first `observe` neither was called, the input never passed
through the model's entry points and the intervention says so instead of running as a no-op.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Intervention, NotApplicable

MOMENTUM = 0.9


class CentreInputs(Intervention):
    name = "centre_inputs"
    tests = ("shared_input_component",)
    changes = "the model's input features centred by a running mean (forward pre-hook)"

    def setup(self, watch: Any) -> None:
        self._mean: torch.Tensor | None = None
        self._calls = 0
        model = watch.model
        self._handles = [model.register_forward_pre_hook(self._hook)]
        self._patched = None
        enc = getattr(model, "encode_image", None)
        if callable(enc):
            def encode_image(x, *args, **kwargs):
                return enc(self._centre(x, model.training), *args, **kwargs)
            model.encode_image = encode_image
            self._patched = model

    def _centre(self, x: Any, training: bool) -> Any:
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() >= 2):
            return x
        self._calls += 1
        with torch.no_grad():
            batch_mean = x.detach().reshape(-1, x.shape[-1]).mean(0)
            if self._mean is None:
                self._mean = batch_mean
            elif training:
                self._mean = MOMENTUM * self._mean + (1 - MOMENTUM) * batch_mean
        return x - self._mean

    def _hook(self, module: Any, args: tuple) -> tuple | None:
        if not args:
            return None
        i = next((k for k, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
        if i is None:
            return None
        return (*args[:i], self._centre(args[i], module.training), *args[i + 1:])

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if self._calls == 0:
            raise NotApplicable("centre_inputs: the model's forward (or encode_image) never received a floating-point "
                                "input tensor before the first observe")
        if not self.did:
            self.did.append(f"centred the input features (running mean over {self._mean.numel()} channels, norm "
                            f"{float(self._mean.norm()):.3g} at step {step})")

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        if self._patched is not None:
            self._patched.__dict__.pop("encode_image", None)

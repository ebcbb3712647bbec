"""centre_inputs: subtract a running mean from the model's input features (tests shared_input_component).

A forward pre-hook on the model (and its ``encode_image`` / Hugging Face ``get_image_features`` when the script
calls those instead of ``forward``, and its image tower, Hugging Face's ``vision_model`` / open_clip's ``visual``,
when the script calls the tower itself) takes the first floating-point tensor argument, or ``pixel_values=`` (the
patch tokens, pooled features or pixels; token ids are integers and are left alone) and subtracts a running
mean: per channel for (B, C, H, W) images, else over every axis but the last (momentum 0.9, updated in
training mode only). If by the first `observe` neither was called, the input never passed
through the model's entry points and the intervention says so instead of running as a no-op.
"""

from __future__ import annotations

from typing import Any

import torch

from probes._hooks import OwnHook

from .base import Intervention, NotApplicable

MOMENTUM = 0.9
ENTRY_POINTS = ("encode_image", "get_image_features")  # open_clip's and Hugging Face's image entry points
IMAGE_TOWERS = ("vision_model", "visual")  # Hugging Face CLIPModel's and open_clip's image tower modules


class CentreInputs(Intervention):
    name = "centre_inputs"
    tests = ("shared_input_component",)
    changes = ("the model's input features centred by a running mean, (B, C, H, W) pixels per channel (forward "
               "pre-hook; encode_image, get_image_features, the image tower)")

    def setup(self, watch: Any) -> None:
        self._mean: torch.Tensor | None = None
        self._last: torch.Tensor | None = None  # the last tensor this fix returned
        self._calls = 0
        model = watch.model
        self._handles = [model.register_forward_pre_hook(OwnHook(self._hook), with_kwargs=True)]
        # a tower the script calls itself (model.vision_model(pixel_values=...)); called from the model's forward
        # it receives the tensor this fix already returned, and `_centre` leaves it alone
        self._handles += [tower.register_forward_pre_hook(OwnHook(self._hook), with_kwargs=True)
                          for name in IMAGE_TOWERS if isinstance(tower := getattr(model, name, None), torch.nn.Module)]
        self._patched: list[str] = []
        self._model = model
        for name in ENTRY_POINTS:
            enc = getattr(model, name, None)
            if callable(enc):
                setattr(model, name, self._wrap(enc, model))
                self._patched.append(name)

    def _wrap(self, enc: Any, model: Any) -> Any:
        def entry(*args, **kwargs):
            if args:
                args = (self._centre(args[0], model.training), *args[1:])
            elif "pixel_values" in kwargs:
                kwargs = {**kwargs, "pixel_values": self._centre(kwargs["pixel_values"], model.training)}
            return enc(*args, **kwargs)
        return entry

    def _centre(self, x: Any, training: bool) -> Any:
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() >= 2):
            return x
        if x is self._last:  # already ours: the model's forward handing it on to its own encode_image /
            return x  # get_image_features (Hugging Face's CLIPModel.forward does), which would centre it twice
        self._calls += 1
        self._last = self._transform(x, training)
        if not self.reached and self._changed():
            self.reached.append(f"changed the model's input on forward call {self._calls} (running mean of norm "
                                f"{float(self._mean.norm()):.3g})")
        return self._last

    def _changed(self) -> bool:
        """Whether the transform is not the identity: a running mean with a non-zero entry."""
        return bool(self._mean.ne(0).any())

    def _transform(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        with torch.no_grad():
            if x.dim() == 4:  # (B, C, H, W) pixels: one mean per channel
                batch_mean = x.detach().mean(dim=(0, 2, 3), keepdim=True)[0]
            else:
                batch_mean = x.detach().reshape(-1, x.shape[-1]).mean(0)
            if self._mean is None:
                self._mean = batch_mean
            elif training:
                self._mean = MOMENTUM * self._mean + (1 - MOMENTUM) * batch_mean
        return x - self._mean

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> tuple | None:
        i = next((k for k, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
        if i is not None:
            return (*args[:i], self._centre(args[i], module.training), *args[i + 1:]), kwargs
        if isinstance(kwargs.get("pixel_values"), torch.Tensor):
            return args, {**kwargs, "pixel_values": self._centre(kwargs["pixel_values"], module.training)}
        return None

    def observe(self, watch: Any, step: int, seen: dict[str, Any]) -> None:
        if self._calls == 0:
            raise NotApplicable(f"{self.name}: the model's forward (or encode_image / get_image_features, or its "
                                "image tower) never received a floating-point input tensor before the first observe")
        if not self.did:
            self.did.append(self._done(step))

    def _done(self, step: int) -> str:
        return (f"centred the input features (running mean over {self._mean.numel()} channels, norm "
                f"{float(self._mean.norm()):.3g} at step {step})")

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        for name in self._patched:
            self._model.__dict__.pop(name, None)

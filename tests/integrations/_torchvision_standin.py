"""Import open_clip on a machine where torchvision cannot load beside the CPU torch.

open_clip imports torchvision at package import time for two things only: its image transforms
(`open_clip/transform.py`: `torchvision.transforms`, `torchvision.transforms.functional`) and
`torchvision.ops.misc.FrozenBatchNorm2d` (`open_clip/utils.py`, used to freeze ResNet/timm towers).
Its CLIP model code (`model.py`, `transformer.py`) is pure torch. When `import torchvision` fails,
`import_open_clip` puts a minimal stand-in for those names into `sys.modules` for the duration of
`import open_clip` only (the transform classes raise if called; `FrozenBatchNorm2d` is a plain
frozen batch norm), then removes it again, so nothing else in the process sees a torchvision.
Where a real torchvision loads, it is used and nothing is stood in for.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

import torch
from torch import nn

STANDIN = "diagnose-tests torchvision stand-in"
TRANSFORMS = ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop", "ColorJitter",
              "Grayscale")
FUNCTIONAL = ("crop", "get_dimensions", "pad", "resize", "to_tensor")


def _module(name: str, package: bool = False) -> types.ModuleType:
    mod = types.ModuleType(name, STANDIN)
    # a real spec, so importlib.util.find_spec("torchvision") answers instead of raising while it is present
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        mod.__path__ = []
    mod.__standin__ = True
    return mod


def _unavailable(name: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"torchvision.{name} is a test stand-in (no torchvision loads beside the CPU torch here)")

    return fail


def _transform_class(name: str) -> type:
    return type(name, (), {"__init__": _unavailable(f"transforms.{name}")})


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (torchvision.ops.misc's semantics)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def _standin_modules() -> dict[str, types.ModuleType]:
    tv = _module("torchvision", package=True)
    transforms = _module("torchvision.transforms", package=True)
    functional = _module("torchvision.transforms.functional")
    ops = _module("torchvision.ops", package=True)
    misc = _module("torchvision.ops.misc")
    for name in TRANSFORMS:
        setattr(transforms, name, _transform_class(name))
    transforms.InterpolationMode = type("InterpolationMode", (), {
        "NEAREST": "nearest", "BILINEAR": "bilinear", "BICUBIC": "bicubic"})
    for name in FUNCTIONAL:
        setattr(functional, name, _unavailable(f"transforms.functional.{name}"))
    misc.FrozenBatchNorm2d = FrozenBatchNorm2d
    transforms.functional, ops.misc, tv.transforms, tv.ops = functional, misc, transforms, ops
    return {m.__name__: m for m in (tv, transforms, functional, ops, misc)}


def torchvision_loads() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError):  # RuntimeError: "operator torchvision::nms does not exist"
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # a half-imported real torchvision must not linger
        return False
    return True


def import_open_clip():
    """`import open_clip`, standing in for torchvision only if no real one loads; None if open_clip is not
    installed (any other import error is raised: a stand-in that falls short must fail, not skip)."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    if importlib.util.find_spec("open_clip") is None:
        return None
    if torchvision_loads():
        return importlib.import_module("open_clip")
    # open_clip imports transformers, which caches whether torchvision exists: ask it before the stand-in is there
    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils.import_utils import is_torchvision_available

        is_torchvision_available()
    standin = _standin_modules()
    sys.modules.update(standin)
    try:
        return importlib.import_module("open_clip")
    finally:
        for name, mod in standin.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]

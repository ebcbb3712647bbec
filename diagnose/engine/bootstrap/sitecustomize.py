"""Seeds for `diagnose ablate -- python train.py`: put on PYTHONPATH by the ablation runner only.

Seed k of an ablation runs the user's script with every seed it sets shifted by k: ``torch.manual_seed(s)``
becomes ``torch.manual_seed(s + k)``, likewise ``numpy.random.seed`` and ``random.seed`` (Lightning's
``seed_everything`` calls these three) and ``torch.cuda.manual_seed[_all]`` (transformers' and accelerate's
``set_seed`` call it after ``torch.manual_seed``: unshifted, it would set every GPU's generator back to the
script's seed). A seeding call made inside another (``torch.manual_seed`` seeds CUDA itself) is not shifted
twice. Seed 0 changes nothing, so the baseline's first seed is the user's
own run. torch and numpy are patched when the script imports them (an import hook: nothing is imported
here), so a process that never imports them pays nothing. A script that never seeds is already
different on every run. The interpreter's own sitecustomize, if any, still runs after this one.
"""

import os
import sys
import threading


def _offset():
    raw = os.environ.get("DIAGNOSE_ABLATE")
    if not raw:
        return 0
    import json

    try:
        return int(json.loads(raw).get("seed_offset") or 0)
    except (ValueError, TypeError, AttributeError):
        return 0


_inside = threading.local()  # a shifted seeding call is running in this thread: the calls it makes pass through


def _shifted(fn, k):
    def seed(s=None, *args, **kwargs):
        depth = getattr(_inside, "depth", 0)
        if not depth and isinstance(s, int) and not isinstance(s, bool):
            s = (s + k) % (2 ** 32) if fn.__module__.startswith("numpy") else s + k
        _inside.depth = depth + 1
        try:
            return fn(s, *args, **kwargs)
        finally:
            _inside.depth = depth

    seed.__wrapped__ = fn
    return seed


def _patch(name, module, k):
    if name == "torch":
        module.manual_seed = _shifted(module.manual_seed, k)
        module.random.manual_seed = module.manual_seed
        cuda = getattr(module, "cuda", None)
        for attr in ("manual_seed", "manual_seed_all"):
            if cuda is not None and hasattr(cuda, attr):
                setattr(cuda, attr, _shifted(getattr(cuda, attr), k))
    elif name == "numpy":
        module.random.seed = _shifted(module.random.seed, k)


def _install(k):
    import importlib.abc
    import importlib.machinery
    import random

    random.seed = _shifted(random.seed, k)

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in ("torch", "numpy"):
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _patch(name, module, k)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())


def _chain():
    """Run the sitecustomize this one shadows (the next one on sys.path), as Python would have."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_k = _offset()
if _k:
    _install(_k)
_chain()

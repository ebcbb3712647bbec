"""The integrations are optional extras: `import diagnose` imports none of them, and a missing one is a
single line naming the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diagnose.integrations import require


def test_import_diagnose_imports_no_framework():
    code = ("import sys, diagnose, diagnose.cli; print(sorted(({m.split('.')[0] for m in sys.modules} & "
            "{'lightning', 'pytorch_lightning', 'wandb', 'accelerate', 'tensorboard', 'ray'}) | "
            "({'diagnose.integrations'} & set(sys.modules))))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("module,extra", [("wandb", "wandb"), ("lightning", "lightning")])
def test_missing_extra_is_one_line_naming_it(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import of a None entry raises ImportError
    with pytest.raises(ImportError) as exc:
        require(module, extra, "SomeAdapter")
    msg = str(exc.value)
    assert "\n" not in msg and f"[{extra}]" in msg and module in msg and "SomeAdapter" in msg


def test_wandb_sink_without_wandb_names_the_extra(monkeypatch):
    from diagnose.integrations.scalars import WandbSink

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"\[wandb\]"):
        WandbSink(run=object())


# the packages only the extras bring (pyproject: dev, ray, lightning, hf, wandb, tb); the core's own
# dependencies (transformers and what it pulls) stay importable
EXTRAS_ONLY = ("pytest", "tensorboard", "flamingo_pytorch", "perceiver_pytorch", "ruff", "lightning",
               "pytorch_lightning", "lightning_fabric", "accelerate", "wandb", "ray", "open_clip", "ftfy")
BLOCKER = f'''
import importlib.machinery as machinery
import sys

BLOCKED = {EXTRAS_ONLY!r}


class _NotInstalled:
    """The path finder, except that a blocked package is not found (find_spec None), as when it is absent."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return machinery.PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        return machinery.PathFinder.find_distributions(*args, **kwargs)

    @classmethod
    def invalidate_caches(cls):
        machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [_NotInstalled if f is machinery.PathFinder else f for f in sys.meta_path]
'''


def test_compare_runs_with_the_core_dependencies_only(tmp_path):
    """The quick start installs `pip install -e .` (no extra): `diagnose compare`, over seeds on local worker
    processes (which start afresh and inherit the block), must import no package an extra brings."""
    import os

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; from diagnose.cli import main; sys.argv = ['diagnose'] + sys.argv[1:]; main()")
    args = ["compare", "perceiver", "direct", "--scale", "tiny", "--steps", "4", "--seeds", "2", "--workers", "2",
            "--quiet", "--set", "dataset.num_train=64", "--set", "dataset.num_val=16", "--set", "dataset.batch_size=16",
            "--out", str(tmp_path / "cmp")]
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    assert (tmp_path / "cmp" / "report.md").is_file(), out.stderr

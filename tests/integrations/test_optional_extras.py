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

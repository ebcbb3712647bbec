"""What the framework callbacks cost per step: the same fit with and without the callback, same process.

Lightning: the tests' two-tower LightningModule (tests/integrations/test_lightning.py) for `--steps`
steps; HF: the tests' tiny CLIPModel through a real Trainer (tests/integrations/test_hf_trainer.py).
Each configuration runs `--reps` times alternating with/without; the ratio is the median of
(with / without) wall times of fit/train (set-up excluded where the framework allows: the first rep is
a warm-up). Prints one JSON object. Usage: python benchmarks/integrations.py [--steps 200] [--reps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def lightning_fit(steps: int, with_cb: bool) -> float:
    import lightning as L

    from diagnose.integrations.lightning import DiagnoseCallback
    from tests.integrations.test_lightning import B, TwoTower, paired

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(paired(), batch_size=B, shuffle=True, drop_last=True)
    cbs = [DiagnoseCallback(out=None, alarm="off")] if with_cb else []
    trainer = L.Trainer(max_steps=steps, callbacks=cbs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    t0 = time.perf_counter()
    trainer.fit(TwoTower(), loader)
    return time.perf_counter() - t0


def hf_train(steps: int, with_cb: bool) -> float:
    from transformers import Trainer, TrainingArguments

    from diagnose.integrations.hf import DiagnoseTrainerCallback
    from tests.integrations.test_hf_trainer import B, collate, dataset, tiny_clip

    out = tempfile.mkdtemp()
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=B, max_steps=steps, learning_rate=1e-3,
                             report_to=[], save_strategy="no", logging_strategy="no", remove_unused_columns=False,
                             use_cpu=True, seed=0, disable_tqdm=True, dataloader_drop_last=True)
    cbs = [DiagnoseTrainerCallback(out=None, alarm="off")] if with_cb else []
    trainer = Trainer(model=tiny_clip(), args=args, train_dataset=dataset(), data_collator=collate, callbacks=cbs)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its metrics; stdout is our JSON
        trainer.train()
    return time.perf_counter() - t0


def measure(fn, steps: int, reps: int) -> dict:
    fn(min(steps, 20), True)  # warm-up: imports, allocator, first-call paths
    ratios, plain, added = [], [], []
    for rep in range(reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        t = {w: fn(steps, w) for w in order}
        ratios.append(t[True] / t[False])
        plain.append(t[False] / steps)
        added.append((t[True] - t[False]) / steps)
    return {"steps": steps, "plain_step_ms_median": round(1e3 * statistics.median(plain), 2),
            "ratio_median": round(statistics.median(ratios), 4), "ratios": [round(r, 4) for r in ratios],
            "added_ms_per_step_median": round(1e3 * statistics.median(added), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"benchmark": "integrations", "torch": torch.__version__, "threads": 1,
                      "lightning": measure(lightning_fit, a.steps, a.reps),
                      "hf_trainer": measure(hf_train, a.steps, a.reps)}, indent=2))


if __name__ == "__main__":
    main()

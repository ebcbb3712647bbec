#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, taken in one call on a lent CUDA machine (its own python3, torch and
# pandas; flamingo-pytorch and einops-exts carried as wheels in .whl/). Each step has its own time limit so one
# that hangs leaves the others' JSON under $OUT.
#   bash benchmarks/gpu_figures.sh            (OUT defaults to ./gpu_out)
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, pandas, typer; print('torch', torch.__version__, 'typer', typer.__version__)"
step() { local t=$1; shift; echo "== $*"; local s=$SECONDS; timeout "$t" "$@"; echo "== rc=$? in $((SECONDS - s)) s"; }
# the CUDA-only tests (skipped on CI's CPU machines)
step 120 python3 -m pytest -q -p no:cacheprovider tests/probes/test_records_cuda.py
# host synchronisations per step inside the watch (cheap, all), steady state after 260 steps
step 120 python3 benchmarks/watch_cost.py --device cuda --models mlp_clip,big_clip --amp bf16 --syncs 40 \
  --out "$OUT/syncs.json"
# overhead on a full-width model (~190 M parameters, bf16 autocast, batch 128)
step 150 python3 benchmarks/watch_cost.py --device cuda --models big_clip --amp bf16 --no-wandb --reps 7 \
  --out "$OUT/big_bf16.json"
# the fixed cost per step on the two small models of issue 27
step 120 python3 benchmarks/watch_cost.py --device cuda --models mlp_clip,perceiver_d64 --no-wandb --reps 9 \
  --out "$OUT/small.json"
# the reference trainer on CUDA (the watch inside it), and under torchrun with nccl
step 60 python3 -m diagnose train --config perceiver --device cuda --steps 40 --quiet --out /tmp/gpu_train
step 60 torchrun --nproc_per_node=1 -m diagnose train --config perceiver --device cuda --steps 20 --quiet \
  --out /tmp/gpu_ddp
for d in /tmp/gpu_train /tmp/gpu_ddp; do [ -f $d/summary.json ] && cp $d/summary.json "$OUT/$(basename $d)_summary.json"; done
true

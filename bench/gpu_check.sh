#!/usr/bin/env bash
# The lab's GPU check from a fresh GPU machine with the repository copied over: installs what
# it needs, then runs bench/gpu_check.py (MFU at 50M/300M/1B, plain vs DDP vs FSDP on one GPU,
# a small IsoFLOP sweep collected and fitted) into OUT. About 8 minutes on one H100.
#
#   bash bench/gpu_check.sh results/gpu/h100-$(date +%F)      # then commit the folder
#   bash bench/gpu_check.sh OUT --dry-run                      # CPU, seconds: the same steps, tiny
#
# Exit 0 when every stage ran through, 1 when one failed (its table in OUT says why).
#
# Install, as the README says for a GPU machine: the machine's own torch first (PyPI's Linux
# wheel is built with CUDA), then the lab. A torch that already sees a GPU is kept; where the
# lab's dependencies are already importable (a machine without the network), the lab itself is
# put on PYTHONPATH instead of installed. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bench/gpu_check.sh OUT [--dry-run] [gpu_check.py options]}
shift
PY=${PYTHON:-python3}
t0=$(date +%s)
if [[ " $* " != *" --dry-run "* ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "[gpu_check.sh] installing torch (CUDA build from PyPI)"
    "$PY" -m pip install --quiet torch
fi
if "$PY" -c "import lightning, submitit, polars, scipy, numpy, optuna, plotly, tokenizers, safetensors, tqdm" 2>/dev/null; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "[gpu_check.sh] installing the lab (pip install -e .)"
    "$PY" -m pip install --quiet -e .
fi
echo "[gpu_check.sh] ready after $(( $(date +%s) - t0 )) s"
# What the install took comes off the 8 minutes: the check gets the rest (at least 5 minutes).
left=$(( 480 - ($(date +%s) - t0) ))
exec "$PY" bench/gpu_check.py --out "$OUT" --budget-s $(( left > 300 ? left : 300 )) "$@"

#!/usr/bin/env bash
# GPU check of the cache-guided model (benchmarks/gpu_check.py): wan2.1-1.3b shape, random weights, bf16, 480p,
# full caches. Training step with and without gradient checkpointing (tokens/s, MFU, peak memory), a LoRA step,
# sampler seconds per chunk in each cache mode. Budget: under 8 minutes on one H100/H200 (hard limit 7.5 min).
# Usage: bash benchmarks/gpu_check.sh [extra gpu_check.py options]; output in bench_out/gpu_check.{log,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p bench_out
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 450 "$PY" benchmarks/gpu_check.py --json bench_out/gpu_check.json "$@" 2>&1 | tee bench_out/gpu_check.log

#!/usr/bin/env bash
# Run one capjax config on every GPU of this machine. See launch/README.md or --help.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/gpu_host.sh [OPTIONS] [-- CAPJAX_ARGS...]

Runs `python -m capjax.main` once on this machine. JAX sees every local GPU and capjax's
data-parallel mesh covers them all: train.batch_size is the global batch and must divide by
the number of GPUs (capjax says so before compiling if it does not).

Options (each can also be set by the environment variable in brackets):
  --config=FILE[:VARIANT]  [CONFIG]         capjax config (default: configs/demo.py)
  --workdir=DIR            [WORKDIR]        run directory (default: runs/RUN, RUN from the
                                            config name); re-running resumes from it
  --gpus=LIST              [CUDA_VISIBLE_DEVICES]  use only these GPUs, e.g. 0,1
  --xla-perf               [XLA_PERF=1]     add XLA's GPU performance flags:
                                            --xla_gpu_enable_latency_hiding_scheduler=true
                                            (overlaps the gradient all-reduce with the
                                            backward pass); more can be given in XLA_FLAGS
  --mem-fraction=F         [MEM_FRACTION]   share of each GPU's memory JAX preallocates
                                            (XLA_PYTHON_CLIENT_MEM_FRACTION; JAX's default
                                            is 0.75)
  --python=PY              [PYTHON]         interpreter with capjax and jax[cuda12]
                                            installed (default: python3)
  --dry-run                [DRY_RUN=1]      print the commands instead of running them
  -h, --help                                this text
  CAPJAX_ARGS                               passed to capjax.main, e.g.
                                            --config.train.batch_size=512

Set the compute dtype with --config.model.dtype=bfloat16 (the default "auto" already picks
bfloat16 on GPUs; parameters stay float32).

Example:
  launch/gpu_host.sh --config=configs/classifier_cifar.py:model=resnet18 \
    --workdir=runs/r18 --xla-perf -- --config.train.batch_size=512
EOF
}

CONFIG="${CONFIG:-configs/demo.py}"
WORKDIR="${WORKDIR:-}"
XLA_PERF="${XLA_PERF:-0}"
MEM_FRACTION="${MEM_FRACTION:-}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"
CAPJAX_ARGS=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --config | --config=*) take_value "$@"; CONFIG="$VALUE"; shift "$SHIFT" ;;
    --workdir | --workdir=*) take_value "$@"; WORKDIR="$VALUE"; shift "$SHIFT" ;;
    --gpus | --gpus=*) take_value "$@"; export CUDA_VISIBLE_DEVICES="$VALUE"; shift "$SHIFT" ;;
    --xla-perf) XLA_PERF=1; shift ;;
    --mem-fraction | --mem-fraction=*) take_value "$@"; MEM_FRACTION="$VALUE"; shift "$SHIFT" ;;
    --python | --python=*) take_value "$@"; PYTHON="$VALUE"; shift "$SHIFT" ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; CAPJAX_ARGS=("$@"); break ;;
    *) die "unknown option '$1' (see --help)." ;;
  esac
done

[[ -n "$WORKDIR" ]] || WORKDIR="runs/$(run_name_from_config "$CONFIG")"
gpu_preflight
cd "$CAPJAX_ROOT"
run_exec "$PYTHON" -m capjax.main --config="$CONFIG" --workdir="$WORKDIR" "${CAPJAX_ARGS[@]}"

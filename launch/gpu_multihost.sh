#!/usr/bin/env bash
# Run one capjax config over several GPU hosts: start this on every host. See --help.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: COORDINATOR_ADDRESS=HOST:PORT NUM_PROCESSES=N PROCESS_ID=I \
         launch/gpu_multihost.sh --workdir=SHARED_DIR [OPTIONS] [-- CAPJAX_ARGS...]

Runs one capjax config as N processes, one per GPU host, joined by jax.distributed: start
the same command on every host, with PROCESS_ID 0 on the host named in COORDINATOR_ADDRESS
and 1 .. N-1 on the others. Each process drives all GPUs of its host and feeds its slice
of the global batch (train.batch_size, which must divide by the total number of GPUs).

Settings (environment variable, or the option after it):
  COORDINATOR_ADDRESS  --coordinator=HOST:PORT  process 0's host and a free port, reachable
                                                from every host (same on all hosts)
  NUM_PROCESSES        --num-processes=N        number of hosts (same on all hosts)
  PROCESS_ID           --process-id=I           this host's index, 0 .. N-1
  WORKDIR              --workdir=DIR            run directory on a filesystem every host
                                                shares (NFS, Filestore, a gcsfuse mount):
                                                checkpoints are written and read by all
  CONFIG               --config=FILE[:VARIANT]  capjax config (default: configs/demo.py)
  XLA_PERF=1           --xla-perf               XLA's GPU performance flags (see
                                                launch/gpu_host.sh --help)
  MEM_FRACTION         --mem-fraction=F         XLA_PYTHON_CLIENT_MEM_FRACTION
  PYTHON               --python=PY              interpreter with capjax and jax[cuda12]
  DRY_RUN=1            --dry-run                print the commands instead of running them
  -h, --help                                    this text
  CAPJAX_ARGS                                   passed to capjax.main

The script exports JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, which
capjax.main passes to jax.distributed.initialize(). Cross-host collectives use NCCL; if the
hosts have several network interfaces, NCCL_SOCKET_IFNAME picks one.

Example (two hosts, the first at 10.0.0.1):
  host 0: COORDINATOR_ADDRESS=10.0.0.1:12345 NUM_PROCESSES=2 PROCESS_ID=0 \
            launch/gpu_multihost.sh --config=configs/cafd_cifar.py --workdir=/shared/runs/cafd
  host 1: COORDINATOR_ADDRESS=10.0.0.1:12345 NUM_PROCESSES=2 PROCESS_ID=1 \
            launch/gpu_multihost.sh --config=configs/cafd_cifar.py --workdir=/shared/runs/cafd
EOF
}

COORDINATOR_ADDRESS="${COORDINATOR_ADDRESS:-}"
NUM_PROCESSES="${NUM_PROCESSES:-}"
PROCESS_ID="${PROCESS_ID:-}"
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
    --coordinator | --coordinator=*) take_value "$@"; COORDINATOR_ADDRESS="$VALUE"; shift "$SHIFT" ;;
    --num-processes | --num-processes=*) take_value "$@"; NUM_PROCESSES="$VALUE"; shift "$SHIFT" ;;
    --process-id | --process-id=*) take_value "$@"; PROCESS_ID="$VALUE"; shift "$SHIFT" ;;
    --config | --config=*) take_value "$@"; CONFIG="$VALUE"; shift "$SHIFT" ;;
    --workdir | --workdir=*) take_value "$@"; WORKDIR="$VALUE"; shift "$SHIFT" ;;
    --xla-perf) XLA_PERF=1; shift ;;
    --mem-fraction | --mem-fraction=*) take_value "$@"; MEM_FRACTION="$VALUE"; shift "$SHIFT" ;;
    --python | --python=*) take_value "$@"; PYTHON="$VALUE"; shift "$SHIFT" ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; CAPJAX_ARGS=("$@"); break ;;
    *) die "unknown option '$1' (see --help)." ;;
  esac
done

# All settings are checked, with every problem named, before anything starts.
problems=()
if [[ -z "$COORDINATOR_ADDRESS" ]]; then
  problems+=("COORDINATOR_ADDRESS is not set: process 0's host:port, e.g. 10.0.0.1:12345")
elif [[ ! "$COORDINATOR_ADDRESS" =~ ^(.+):([0-9]{1,5})$ ]] || (( BASH_REMATCH[2] < 1 || BASH_REMATCH[2] > 65535 )); then
  problems+=("COORDINATOR_ADDRESS '$COORDINATOR_ADDRESS' must be host:port with a port in 1..65535")
fi
if [[ -z "$NUM_PROCESSES" ]]; then
  problems+=("NUM_PROCESSES is not set: the number of hosts")
elif [[ ! "$NUM_PROCESSES" =~ ^[0-9]+$ ]] || (( 10#$NUM_PROCESSES < 1 )); then
  problems+=("NUM_PROCESSES '$NUM_PROCESSES' must be a whole number >= 1")
fi
if [[ -z "$PROCESS_ID" ]]; then
  problems+=("PROCESS_ID is not set: 0 on the coordinator host, 1 .. NUM_PROCESSES-1 on the others")
elif [[ ! "$PROCESS_ID" =~ ^[0-9]+$ ]]; then
  problems+=("PROCESS_ID '$PROCESS_ID' must be a whole number")
elif [[ "$NUM_PROCESSES" =~ ^[0-9]+$ ]] && (( 10#$PROCESS_ID >= 10#$NUM_PROCESSES )); then
  problems+=("PROCESS_ID $PROCESS_ID must be below NUM_PROCESSES ($NUM_PROCESSES)")
fi
if [[ -z "$WORKDIR" ]]; then
  problems+=("WORKDIR (--workdir) is not set: a directory all hosts share")
elif [[ "$WORKDIR" == gs://* ]]; then
  problems+=("WORKDIR '$WORKDIR': mount the bucket with gcsfuse on every host and pass the mounted path")
fi
if [[ ${#problems[@]} -gt 0 ]]; then
  printf '%s: error: the multi-host settings are incomplete:\n' "$(basename "$0")" >&2
  printf '  - %s.\n' "${problems[@]}" >&2
  printf 'See %s --help.\n' "$0" >&2
  exit 2
fi
[[ "$WORKDIR" != /tmp/* ]] || note "WORKDIR is under /tmp: make sure it is one directory shared by all hosts."

# What capjax.core.mesh.maybe_initialize_distributed() reads.
export_var JAX_COORDINATOR_ADDRESS "$COORDINATOR_ADDRESS"
export_var JAX_NUM_PROCESSES "$((10#$NUM_PROCESSES))"
export_var JAX_PROCESS_ID "$((10#$PROCESS_ID))"
note "process $JAX_PROCESS_ID of $JAX_NUM_PROCESSES, coordinator $JAX_COORDINATOR_ADDRESS."
gpu_preflight
cd "$CAPJAX_ROOT"
run_exec "$PYTHON" -m capjax.main --config="$CONFIG" --workdir="$WORKDIR" "${CAPJAX_ARGS[@]}"

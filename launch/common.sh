# Shared helpers for the launch scripts (sourced, not run).
# shellcheck shell=bash

# The repository root (the parent of launch/).
CAPJAX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CAPJAX_ROOT

# Prints an error naming the script and exits with status 2 (a usage or settings error).
die() {
  printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
  exit 2
}

# Prints a note on stderr.
note() {
  printf '%s: %s\n' "$(basename "$0")" "$*" >&2
}

# Quotes each argument for a POSIX shell, leaving plain words as they are, so that a printed
# command can be pasted back into a terminal.
shell_quote() {
  local arg out=()
  for arg in "$@"; do
    if [[ -n "$arg" && "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${out[*]}"
}

# Runs a command, or with DRY_RUN=1 only prints it (on stdout, prefixed with "+ ").
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '+ %s\n' "$(shell_quote "$@")"
  else
    printf '+ %s\n' "$(shell_quote "$@")" >&2
    "$@"
  fi
}

# Exports NAME=VALUE; with DRY_RUN=1 also prints it, so the printed commands are complete.
export_var() {
  export "$1=$2"
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '+ export %s\n' "$(shell_quote "$1=$2")"
  fi
}

# Requires a program on PATH, or dies with what to install.
require_program() {
  local program="$1" hint="$2"
  command -v "$program" >/dev/null 2>&1 || die "'$program' is not on PATH. $hint"
}

# A run name from a config argument: configs/cafd_cifar.py:smoke,model=x -> cafd_cifar-smoke-model-x
run_name_from_config() {
  local config="$1" stem variant
  stem="$(basename "${config%%:*}" .py)"
  variant=""
  [[ "$config" == *:* ]] && variant="-${config#*:}"
  printf '%s%s' "$stem" "$variant" | tr -c 'A-Za-z0-9._-' '-'
}

# Like run, but replaces the shell with the command, so that signals (SIGTERM on preemption,
# Ctrl-C) reach it directly and capjax can checkpoint before it stops.
run_exec() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '+ %s\n' "$(shell_quote "$@")"
    exit 0
  fi
  printf '+ %s\n' "$(shell_quote "$@")" >&2
  exec "$@"
}

# Reads "--opt=value" or "--opt value" from "$@"; sets VALUE, and SHIFT to the number of
# arguments used.
# shellcheck disable=SC2034  # VALUE and SHIFT are the caller's outputs
take_value() {
  local option="$1"
  shift
  if [[ "$option" == *=* ]]; then
    VALUE="${option#*=}"
    SHIFT=1
  elif [[ $# -ge 1 ]]; then
    VALUE="$1"
    SHIFT=2
  else
    die "${option%%=*} needs a value (see --help)."
  fi
}

# XLA flags that help data-parallel training on GPUs (see JAX's "GPU performance tips"):
# the latency-hiding scheduler overlaps the gradient all-reduce with the backward pass.
# XLA rejects unknown flags at start-up, so only long-standing ones are listed here; add
# more through XLA_FLAGS, which is kept.
XLA_GPU_PERF_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true"

# Checks that this machine has NVIDIA GPUs and that JAX (with PYTHON) sees them; exports the
# optional XLA and memory settings. Uses DRY_RUN, PYTHON, XLA_PERF, MEM_FRACTION.
gpu_preflight() {
  require_program nvidia-smi "No NVIDIA driver found on this machine. Install the driver (and use a GPU host), or run capjax on the CPU with 'python -m capjax.main'."
  [[ "${DRY_RUN:-0}" == 1 ]] \
    || require_program "$PYTHON" "Set PYTHON to the interpreter that has capjax installed."
  local gpus
  gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
  [[ "$gpus" -ge 1 ]] || die "nvidia-smi lists no GPU ('nvidia-smi -L' printed none)."
  note "$gpus GPU(s) on $(hostname)."
  [[ -z "${CUDA_VISIBLE_DEVICES:-}" ]] || export_var CUDA_VISIBLE_DEVICES "$CUDA_VISIBLE_DEVICES"
  if [[ "${XLA_PERF:-0}" == 1 ]]; then
    export_var XLA_FLAGS "${XLA_FLAGS:+$XLA_FLAGS }$XLA_GPU_PERF_FLAGS"
  fi
  if [[ -n "${MEM_FRACTION:-}" ]]; then
    [[ "$MEM_FRACTION" =~ ^(0?\.[0-9]+|1(\.0*)?)$ ]] || die "MEM_FRACTION '$MEM_FRACTION' must be a fraction in (0, 1], e.g. 0.9."
    export_var XLA_PYTHON_CLIENT_MEM_FRACTION "$MEM_FRACTION"
  fi
  local check="import jax; b = jax.default_backend(); print(b, jax.local_device_count()); raise SystemExit(b != 'gpu')"
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '+ %s\n' "$(shell_quote "$PYTHON" -c "$check")"
  elif ! "$PYTHON" -c "$check" >/dev/null 2>&1; then
    die "JAX in '$PYTHON' does not see the GPUs (its backend is not 'gpu'). Install the CUDA build: $PYTHON -m pip install -U \"jax[cuda12]\"."
  fi
}

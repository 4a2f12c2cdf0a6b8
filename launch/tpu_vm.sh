#!/usr/bin/env bash
# Create a Cloud TPU VM (or pod slice), install capjax on every worker, run one config.
# See launch/README.md, or run with --help.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh [COMMAND] [OPTIONS] [-- CAPJAX_ARGS...]

Runs capjax on a Cloud TPU VM or pod slice with gcloud.

Commands:
  all      up, then run (the default)
  up       create the TPU VM, or reuse it if it exists, and install capjax on every worker
           (gcloud compute tpus tpu-vm ssh --worker=all)
  run      start one config on every worker and follow worker 0's log
  logs     follow the log of the last run on worker 0 (WORKER=N for another)
  delete   delete the TPU VM; this stops its billing (the bucket is kept)

Options (each can also be set by the environment variable in brackets):
  --project=ID             [PROJECT]           Google Cloud project (required)
  --zone=ZONE              [ZONE]              e.g. us-central2-b (v4), us-west4-a (v5e) (required)
  --accelerator-type=TYPE  [ACCELERATOR_TYPE]  e.g. v4-8, v5litepod-16 (required to create)
  --runtime-version=V      [RUNTIME_VERSION]   TPU software version; default from the type:
                                               v2/v3/v4: tpu-ubuntu2204-base, v5litepod:
                                               v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5,
                                               v6e: v2-alpha-tpuv6e
  --name=NAME              [TPU_NAME or NAME]  TPU VM name (default: capjax-tpu)
  --config=FILE[:VARIANT]  [CONFIG]            capjax config (default: configs/demo.py)
  --workdir=DIR            [WORKDIR]           run directory on the workers; on a slice with
                                               several workers it must be shared by all of
                                               them (default: /gcs/BUCKET/capjax/RUN with
                                               --bucket, else ~/capjax_runs/RUN on one worker)
  --bucket=BUCKET          [BUCKET]            a Cloud Storage bucket to mount with gcsfuse at
                                               /gcs/BUCKET on every worker, for the workdir
  --repo=URL               [REPO_URL]          git clone URL on the workers instead of copying
                                               this checkout (tracked and untracked files)
  --ref=REF                [REF]               branch or tag to clone with --repo
  --spot                   [SPOT=1]            create a Spot TPU (cheaper, can be preempted;
                                               `run` again resumes from the last checkpoint)
  --no-follow              [FOLLOW=0]          start the run and return at once
  --dry-run                [DRY_RUN=1]         print the gcloud commands instead of running them
  -h, --help                                   this text
  CAPJAX_ARGS                                  passed to `python -m capjax.main`, e.g.
                                               --config.train.epochs=3
  Extra flags for `gcloud compute tpus tpu-vm create` can be given in CREATE_FLAGS
  (word-split), e.g. CREATE_FLAGS="--network=my-net --reserved".

Examples:
  PROJECT=my-proj ZONE=us-central2-b ACCELERATOR_TYPE=v4-8 \
    launch/tpu_vm.sh --config=configs/classifier_cifar.py:model=resnet18
  launch/tpu_vm.sh --project=my-proj --zone=us-west4-a --accelerator-type=v5litepod-16 \
    --bucket=my-bucket --config=configs/cafd_cifar.py
  launch/tpu_vm.sh delete --project=my-proj --zone=us-central2-b

A TPU VM bills for every hour it exists, busy or idle, until it is deleted.
EOF
}

COMMAND=all
PROJECT="${PROJECT:-}"
ZONE="${ZONE:-}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
NAME="${TPU_NAME:-${NAME:-capjax-tpu}}"
CONFIG="${CONFIG:-configs/demo.py}"
WORKDIR="${WORKDIR:-}"
BUCKET="${BUCKET:-}"
REPO_URL="${REPO_URL:-}"
REF="${REF:-}"
SPOT="${SPOT:-0}"
FOLLOW="${FOLLOW:-1}"
DRY_RUN="${DRY_RUN:-0}"
WORKER="${WORKER:-0}"
CAPJAX_ARGS=()

if [[ $# -ge 1 && "$1" != -* ]]; then
  COMMAND="$1"
  shift
fi
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --project | --project=*) take_value "$@"; PROJECT="$VALUE"; shift "$SHIFT" ;;
    --zone | --zone=*) take_value "$@"; ZONE="$VALUE"; shift "$SHIFT" ;;
    --accelerator-type | --accelerator-type=*) take_value "$@"; ACCELERATOR_TYPE="$VALUE"; shift "$SHIFT" ;;
    --runtime-version | --runtime-version=*) take_value "$@"; RUNTIME_VERSION="$VALUE"; shift "$SHIFT" ;;
    --name | --name=*) take_value "$@"; NAME="$VALUE"; shift "$SHIFT" ;;
    --config | --config=*) take_value "$@"; CONFIG="$VALUE"; shift "$SHIFT" ;;
    --workdir | --workdir=*) take_value "$@"; WORKDIR="$VALUE"; shift "$SHIFT" ;;
    --bucket | --bucket=*) take_value "$@"; BUCKET="$VALUE"; shift "$SHIFT" ;;
    --repo | --repo=*) take_value "$@"; REPO_URL="$VALUE"; shift "$SHIFT" ;;
    --ref | --ref=*) take_value "$@"; REF="$VALUE"; shift "$SHIFT" ;;
    --spot) SPOT=1; shift ;;
    --no-follow) FOLLOW=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; CAPJAX_ARGS=("$@"); break ;;
    *) die "unknown option '$1' (see --help)." ;;
  esac
done

case "$COMMAND" in
  all | up | run | logs | delete) ;;
  *) die "unknown command '$COMMAND'; one of: all, up, run, logs, delete (see --help)." ;;
esac

# Every check that needs no cloud call comes first.
require_program gcloud "Install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), then run 'gcloud auth login'."
missing=()
[[ -n "$PROJECT" ]] || missing+=("PROJECT (--project)")
[[ -n "$ZONE" ]] || missing+=("ZONE (--zone)")
if [[ "$COMMAND" == all || "$COMMAND" == up ]]; then
  [[ -n "$ACCELERATOR_TYPE" ]] || missing+=("ACCELERATOR_TYPE (--accelerator-type, e.g. v4-8 or v5litepod-16)")
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  joined="$(printf '%s; ' "${missing[@]}")"
  die "missing settings: ${joined%; }. Set them as environment variables or options (see --help)."
fi
[[ "$NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "NAME '$NAME' must be lower-case letters, digits and dashes, starting with a letter."
[[ "$SPOT" == 0 || "$SPOT" == 1 ]] || die "SPOT must be 0 or 1, not '$SPOT'."
if [[ -n "$BUCKET" ]]; then
  BUCKET="${BUCKET#gs://}"
  BUCKET="${BUCKET%%/*}"
fi
[[ "$WORKDIR" != gs://* ]] || die "WORKDIR '$WORKDIR': capjax writes through the filesystem; use --bucket=BUCKET instead, which mounts it at /gcs/BUCKET on every worker."
if [[ -z "$RUNTIME_VERSION" && ( "$COMMAND" == all || "$COMMAND" == up ) ]]; then
  case "$ACCELERATOR_TYPE" in
    v2-* | v3-* | v4-*) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) die "no default RUNTIME_VERSION for ACCELERATOR_TYPE '$ACCELERATOR_TYPE'; set one (gcloud compute tpus tpu-vm versions list --zone=$ZONE)." ;;
  esac
fi

GCLOUD_TPU=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE" --project="$PROJECT")
RUN_NAME="$(run_name_from_config "$CONFIG")"
REMOTE_DIR=capjax  # under the remote home, as are the next two
VENV=capjax_venv
LOG="capjax_logs/$RUN_NAME.log"

ssh_workers() {  # ssh_workers WORKERS COMMAND
  run "${GCLOUD_TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker="$1" --quiet --command="$2"
}

# Prints the VM's "STATE ACCELERATOR_TYPE", or nothing when it does not exist.
describe_vm() {
  "${GCLOUD_TPU[@]}" describe "$NAME" "${WHERE[@]}" --format='value(state,acceleratorType)' 2>/dev/null || true
}

worker_count() {
  local endpoints
  endpoints="$("${GCLOUD_TPU[@]}" describe "$NAME" "${WHERE[@]}" --format='value(networkEndpoints[].ipAddress)')"
  awk -F';' '{print NF}' <<<"$endpoints"
}

create_or_reuse() {
  if [[ "$DRY_RUN" == 1 ]]; then
    run "${GCLOUD_TPU[@]}" describe "$NAME" "${WHERE[@]}" --format='value(state,acceleratorType)'
    note "dry run: printing the create command as if '$NAME' did not exist."
  else
    local found state type
    found="$(describe_vm)"
    if [[ -n "$found" ]]; then
      read -r state type <<<"$found"
      [[ "${type##*/}" == "$ACCELERATOR_TYPE" ]] || die "TPU VM '$NAME' exists with accelerator type '${type##*/}', not '$ACCELERATOR_TYPE'. Delete it (launch/tpu_vm.sh delete) or choose another --name."
      [[ "$state" == READY ]] || die "TPU VM '$NAME' exists but is $state, not READY. A preempted Spot VM must be deleted (launch/tpu_vm.sh delete) and created again."
      note "reusing TPU VM '$NAME' ($type, $state)."
      return
    fi
  fi
  local create=("${GCLOUD_TPU[@]}" create "$NAME" "${WHERE[@]}"
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  [[ "$SPOT" == 1 ]] && create+=(--spot)
  if [[ -n "${CREATE_FLAGS:-}" ]]; then
    local extra
    read -r -a extra <<<"$CREATE_FLAGS"
    create+=("${extra[@]}")
  fi
  run "${create[@]}"
}

install_capjax() {
  local fetch
  if [[ -n "$REPO_URL" ]]; then
    local branch=""
    [[ -n "$REF" ]] && branch="--branch $(printf '%q' "$REF") "
    fetch="rm -rf ~/$REMOTE_DIR && git clone --depth 1 ${branch}$(printf '%q' "$REPO_URL") ~/$REMOTE_DIR"
  else
    # This checkout's tracked and untracked (not ignored) files, as they are now.
    local archive="${TMPDIR:-/tmp}/capjax-upload.tar.gz"
    if [[ "$DRY_RUN" == 1 ]]; then
      printf '+ (cd %s && git ls-files -z --cached --others --exclude-standard | tar -czf %s --null -T -)\n' \
        "$(shell_quote "$CAPJAX_ROOT")" "$(shell_quote "$archive")"
    else
      archive="$(mktemp "${TMPDIR:-/tmp}/capjax-XXXXXX")"
      (cd "$CAPJAX_ROOT" && git ls-files -z --cached --others --exclude-standard \
        | tar -czf "$archive" --null -T -)
    fi
    run "${GCLOUD_TPU[@]}" scp "$archive" "$NAME:capjax.tar.gz" "${WHERE[@]}" --worker=all --quiet
    [[ "$DRY_RUN" == 1 ]] || rm -f "$archive"
    fetch="mkdir -p ~/$REMOTE_DIR && tar -xzf ~/capjax.tar.gz -C ~/$REMOTE_DIR && rm ~/capjax.tar.gz"
  fi
  # capjax needs Python >= 3.11; the TPU VM images (Ubuntu 22.04) bring 3.10, so a venv on
  # Ubuntu's python3.11 holds capjax and jax[tpu] (libtpu) unless python3 is new enough.
  ssh_workers all "set -e; $fetch
PY=python3
if ! \$PY -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  command -v python3.11 >/dev/null || { sudo apt-get update -q && sudo apt-get install -y -q python3.11 python3.11-venv; }
  PY=python3.11
fi
[ -x ~/$VENV/bin/python ] || \$PY -m venv ~/$VENV
cd ~/$REMOTE_DIR && ~/$VENV/bin/python -m pip install -q -U pip && ~/$VENV/bin/python -m pip install -q -e . 'jax[tpu]'
~/$VENV/bin/python -c 'import jax; print(jax.local_devices()[0].platform, len(jax.local_devices()), \"local devices\")'"
  if [[ -n "$BUCKET" ]]; then
    # gcsfuse from Google's apt repository, as in the Cloud Storage FUSE install guide.
    local bucket_q
    bucket_q="$(printf '%q' "$BUCKET")"
    ssh_workers all "set -e; if ! command -v gcsfuse >/dev/null; then
echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; fi
sudo mkdir -p /gcs/$bucket_q && sudo chown \"\$(id -u):\$(id -g)\" /gcs/$bucket_q
mountpoint -q /gcs/$bucket_q || gcsfuse --implicit-dirs $bucket_q /gcs/$bucket_q"
  fi
}

start_run() {
  local workdir_expr
  if [[ -n "$WORKDIR" ]]; then
    workdir_expr="$(printf '%q' "$WORKDIR")"
  elif [[ -n "$BUCKET" ]]; then
    workdir_expr="$(printf '%q' "/gcs/$BUCKET/capjax/$RUN_NAME")"
  else
    workdir_expr="\"\$HOME/capjax_runs/$RUN_NAME\""
    if [[ "$DRY_RUN" != 1 ]]; then
      local workers
      workers="$(worker_count)"
      [[ "$workers" -le 1 ]] || die "'$NAME' has $workers workers: they need one shared workdir. Pass --bucket=BUCKET (mounted with gcsfuse) or --workdir=<shared path, e.g. an NFS/Filestore mount>."
    fi
    note "workdir on the worker's own disk (~/capjax_runs/$RUN_NAME): fine for a one-worker TPU VM only."
  fi
  local args=(--config="$CONFIG" "${CAPJAX_ARGS[@]}")
  local quoted
  quoted="$(printf '%q ' "${args[@]}")"
  # CAPJAX_DISTRIBUTED=auto: jax.distributed.initialize() finds the slice's workers itself.
  ssh_workers all "cd ~/$REMOTE_DIR && mkdir -p ~/capjax_logs && CAPJAX_DISTRIBUTED=auto nohup ~/$VENV/bin/python -m capjax.main ${quoted}--workdir=$workdir_expr > ~/$LOG 2>&1 < /dev/null & echo \$! > ~/$LOG.pid; echo \"started on \$(hostname): log ~/$LOG\""
  if [[ "$FOLLOW" == 1 ]]; then
    follow_log
  else
    note "follow the log with: launch/tpu_vm.sh logs --project=$PROJECT --zone=$ZONE --name=$NAME --config=$CONFIG"
  fi
}

follow_log() {
  note "following worker $WORKER's log (Ctrl-C stops following, not the run)."
  ssh_workers "$WORKER" "tail -n +1 -F --pid=\"\$(cat ~/$LOG.pid)\" ~/$LOG"
}

case "$COMMAND" in
  all) create_or_reuse; install_capjax; start_run ;;
  up) create_or_reuse; install_capjax ;;
  run) start_run ;;
  logs) follow_log ;;
  delete)
    run "${GCLOUD_TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet
    [[ "$DRY_RUN" == 1 ]] \
      || note "deleted '$NAME': its billing has stopped.${BUCKET:+ The bucket gs://$BUCKET is kept (storage is billed separately).}"
    ;;
esac

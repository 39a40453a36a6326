#!/usr/bin/env bash
# Train infotok_jax on a Cloud TPU VM slice: create the slice, copy the code, install, run on all
# workers with --distributed (jax.distributed.initialize() auto-detects the pod), delete the slice.
# The install uses the pinned versions of constraints.txt (plus jax[tpu]) and the `gcs` extra (gcsfs,
# for the gs:// workdir). Data: the prepared datasets live in a bucket that `run` mounts with gcsfuse
# on every worker (array_record files are read with random access, which gcsfuse serves from its
# cache; see docs/training.md, Storage), and TFDS_DATA_DIR points at the mount.
#
# Usage: launch/tpu_pod.sh [options] {create|copy|install|run|delete|all} [-- extra training flags]
#
# Every option also has an environment variable (in brackets); flags win over the environment.
#   --name NAME             TPU VM name                          [TPU_NAME]       (default infotok-pod)
#   --zone ZONE             GCE zone                             [ZONE]           (default us-west4-a)
#   --accelerator-type T    slice type, e.g. v5litepod-64        [ACCELERATOR_TYPE] (default v5litepod-64)
#   --version V             TPU VM runtime version               [RUNTIME_VERSION] (default v2-alpha-tpuv5-lite)
#   --project P             GCP project (default: gcloud's)      [PROJECT]
#   --spot                  create a Spot slice                  [SPOT=1]
#   --tfds-data-dir DIR     gs://BUCKET[/PATH] holding the prepared datasets, mounted with gcsfuse at
#                           ~/gcs/BUCKET on the workers; required by run [TFDS_DATA_DIR]
#   --config SPEC           experiments/configs/<name>.py[:args], required by run [CONFIG]
#   --workdir DIR           gs:// checkpoint/log dir, required by run [WORKDIR]
#   --git-repo URL          clone this repository on the workers instead of copying a tarball [GIT_REPO]
#   --git-ref REF           commit, branch or tag to check out with --git-repo [GIT_REF] (default main)
#   --python VERSION        Python for the workers' venv (made with uv) [PYTHON_VERSION] (default 3.11)
#   --keep                  `all` does not delete the slice at the end [KEEP=1]
#   --dry-run               print every command instead of running it (gcloud not needed) [DRY_RUN=1]
#
# `all` runs create, copy, install, run, then delete (unless --keep). The workdir and the data live in
# GCS, so deleting the slice loses nothing; `run` again on a kept slice resumes from the last checkpoint.
set -euo pipefail

TPU_NAME="${TPU_NAME:-infotok-pod}"
ZONE="${ZONE:-us-west4-a}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v5litepod-64}"
RUNTIME_VERSION="${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}"
PROJECT="${PROJECT:-}"
SPOT="${SPOT:-0}"
TFDS_DATA_DIR="${TFDS_DATA_DIR:-}"
CONFIG="${CONFIG:-}"
WORKDIR="${WORKDIR:-}"
GIT_REPO="${GIT_REPO:-}"
GIT_REF="${GIT_REF:-main}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
KEEP="${KEEP:-0}"
DRY_RUN="${DRY_RUN:-0}"
# Paths on the workers, left unexpanded here so that ~ expands there.
# shellcheck disable=SC2088
REMOTE_DIR='~/infotok_jax'
# shellcheck disable=SC2088
REMOTE_VENV='~/infotok_venv'
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUBCOMMAND=""
EXTRA_ARGS=()

die() { echo "tpu_pod.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

# Prints its arguments as one copy-pasteable shell command line.
shell_join() {
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+="$arg "
    else
      out+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  printf '%s\n' "${out% }"
}

# Runs a command, or only prints it with --dry-run.
run_cmd() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+ %s\n' "$(shell_join "$@")"
  else
    printf '+ %s\n' "$(shell_join "$@")" >&2
    "$@"
  fi
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) TPU_NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator-type) ACCELERATOR_TYPE="$2"; shift 2 ;;
    --version) RUNTIME_VERSION="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --tfds-data-dir) TFDS_DATA_DIR="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --git-repo) GIT_REPO="$2"; shift 2 ;;
    --git-ref) GIT_REF="$2"; shift 2 ;;
    --python) PYTHON_VERSION="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    create|copy|install|run|delete|all)
      [[ -z "$SUBCOMMAND" ]] || die "two subcommands given: $SUBCOMMAND and $1"
      SUBCOMMAND="$1"; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -n "$SUBCOMMAND" ]] || die "no subcommand: give one of create, copy, install, run, delete, all"
[[ "$DRY_RUN" == 1 ]] || command -v gcloud >/dev/null || die "gcloud not found; install the Google Cloud SDK or use --dry-run"

GCLOUD_FLAGS=(--zone="$ZONE")
[[ -z "$PROJECT" ]] || GCLOUD_FLAGS+=(--project="$PROJECT")

# Runs a shell command line on every worker of the slice.
on_all_workers() {
  run_cmd gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="$1"
}

tpu_exists() {
  gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_FLAGS[@]}" >/dev/null 2>&1
}

do_create() {
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "# skipped if this succeeds (slice already exists):"
    run_cmd gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_FLAGS[@]}"
  elif tpu_exists; then
    echo "TPU $TPU_NAME already exists in $ZONE; not creating it." >&2
    return 0
  fi
  local flags=(--accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  [[ "$SPOT" != 1 ]] || flags+=(--spot)
  run_cmd gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" "${flags[@]}"
}

do_copy() {
  if [[ -n "$GIT_REPO" ]]; then
    on_all_workers "rm -rf $REMOTE_DIR && git clone --quiet $(printf '%q' "$GIT_REPO") $REMOTE_DIR \
&& git -C $REMOTE_DIR checkout --quiet $(printf '%q' "$GIT_REF")"
    return 0
  fi
  local tarball="${TMPDIR:-/tmp}/infotok_jax-${TPU_NAME}.tar.gz"
  run_cmd tar -C "$REPO_ROOT" --exclude=.git --exclude=.venv --exclude=.cache --exclude=__pycache__ \
    -czf "$tarball" .
  run_cmd gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:infotok_jax.tar.gz" "${GCLOUD_FLAGS[@]}" \
    --worker=all
  on_all_workers "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf ~/infotok_jax.tar.gz -C $REMOTE_DIR"
}

do_install() {
  # TPU VM images ship an older system Python than the project needs, so uv provides the venv; gcsfuse
  # (for the data bucket) comes from Google's apt repository when the image lacks it.
  on_all_workers "(command -v gcsfuse >/dev/null || { \
echo \"deb https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" \
| sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null \
&& curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - \
&& sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; }) \
&& PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet uv && ~/.local/bin/uv venv --allow-existing \
--python $(printf '%q' "$PYTHON_VERSION") $REMOTE_VENV && cd $REMOTE_DIR && ~/.local/bin/uv pip install \
--python $REMOTE_VENV/bin/python -c constraints.txt -e '.[gcs]' 'jax[tpu]'"
}

# Every worker must see the same data and checkpoints, so both must live in GCS.
check_run_settings() {
  [[ -n "$CONFIG" ]] || die "run needs --config (CONFIG), e.g. experiments/configs/<name>.py"
  [[ "$WORKDIR" == gs://* ]] || die "run needs --workdir (WORKDIR) in GCS (gs://...), got '${WORKDIR}'"
  [[ "$TFDS_DATA_DIR" == gs://* ]] ||
    die "run needs --tfds-data-dir (TFDS_DATA_DIR) in GCS (gs://...), got '${TFDS_DATA_DIR}'"
}

do_run() {
  check_run_settings
  local train
  local bucket="${TFDS_DATA_DIR#gs://}"
  local subdir=""
  [[ "$bucket" != */* ]] || subdir="/${bucket#*/}"
  bucket="${bucket%%/*}"
  # The mount point is under the worker's $HOME, so it is left unexpanded here.
  local mount="\$HOME/gcs/$bucket"
  train=("$REMOTE_VENV/bin/python" -m infotok_jax.train "--config=$CONFIG" "--workdir=$WORKDIR" \
    --distributed "${EXTRA_ARGS[@]}")
  local quoted
  # ~ must expand on the worker, so only the arguments after the interpreter are quoted.
  quoted="${train[0]} $(printf '%q ' "${train[@]:1}")"
  on_all_workers "set -o pipefail; mkdir -p $mount && { mountpoint -q $mount \
|| gcsfuse --implicit-dirs --rename-dir-limit=1000 $(printf '%q' "$bucket") $mount; } \
&& cd $REMOTE_DIR && TFDS_DATA_DIR=$mount$(printf '%q' "$subdir") ${quoted% } 2>&1 | tee -a ~/infotok_train.log"
}

do_delete() {
  if [[ "$DRY_RUN" != 1 ]] && ! tpu_exists; then
    echo "TPU $TPU_NAME does not exist in $ZONE; nothing to delete." >&2
    return 0
  fi
  run_cmd gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --quiet
}

case "$SUBCOMMAND" in
  create) do_create ;;
  copy) do_copy ;;
  install) do_install ;;
  run) do_run ;;
  delete) do_delete ;;
  all)
    check_run_settings
    do_create
    do_copy
    do_install
    do_run
    [[ "$KEEP" == 1 ]] || do_delete
    ;;
esac

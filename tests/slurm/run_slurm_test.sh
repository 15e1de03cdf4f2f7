#!/usr/bin/env bash
# The workflow on a real SLURM: a throw-away single-node cluster on this machine (Debian's slurm-wlm + munge,
# loopback only, no accounting), `snakemake all --profile workflow/profiles/slurm` on a tiny grid, the same grid
# run locally, and every run's `metrics` and `validation` compared. Needs root (installs packages, runs the
# daemons); CI runs it after the test suite (.ci/run). Takes 4-5 minutes on 2 shared cores after the ~15 s
# package install: ~2.5-3 min on SLURM (mostly the plugin's status polling between the 20 jobs), ~1.5 min locally.
#
#   tests/slurm/run_slurm_test.sh            # KEEP_SLURM_TEST=1 keeps the temporary directory
#
# The node advertises two GPU slots backed by no device (gres.conf points at /dev/null), and the run sets
# `--set-resources extract:gpu=1 tune:gpu=1 train:gpu=1` (as a GPU cluster's profile would), so those jobs really
# go through `sbatch --gpus=1` / `srun --gpus=1`;
# there is no CUDA device, so the code runs on the CPU and must give the local run's numbers exactly.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
BIN="$(dirname "$PY")"
HELPER="$REPO/tests/slurm/helper.py"
T0=$(date +%s)
log() { printf '[slurm-test %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() { log "FAILED: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs slurm-wlm and munge and starts slurmctld/slurmd)"
[ -x "$BIN/snakemake" ] || fail "no $BIN/snakemake: run \`make setup\` first"
"$PY" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
    || fail "snakemake-executor-plugin-slurm is not installed in $BIN: run \`make setup\`"
export PATH="$BIN:$PATH"

# --- 1. packages -----------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null; }
fi
log "$(slurmctld -V), $(munged --version 2>&1 | awk '{print $1}')"

# --- 2. munge, slurmctld, slurmd (state under one temporary directory) ---------------------------------
# SLURM's configuration goes where SLURM looks by default (/etc/slurm), because the plugin's job step runs srun
# with SLURM_CONF removed from its environment; an existing configuration not written by this test is refused.
SLURM_ETC=/etc/slurm
MARK="tests/slurm/run_slurm_test.sh"
for f in slurm.conf gres.conf; do
    if [ -e "$SLURM_ETC/$f" ] && ! grep -q "$MARK" "$SLURM_ETC/$f"; then
        fail "$SLURM_ETC/$f exists and was not written by this test: run it on a machine without a SLURM setup"
    fi
done
WORK="$(mktemp -d /tmp/mlaflow-slurm.XXXXXX)"
chmod 755 "$WORK"                    # munged wants its socket directory reachable by everyone
STATE="$WORK/state" MUNGE="$WORK/munge"
mkdir -p "$STATE/ctld" "$STATE/slurmd" "$MUNGE" "$SLURM_ETC"
chmod 755 "$MUNGE"
unset SLURM_CONF SLURM_PARTITION SLURM_ACCOUNT SBATCH_PARTITION SBATCH_ACCOUNT SLURM_JOB_ID

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ "$rc" != 0 ]; then
        log "failure: last lines of the logs"
        for f in "$WORK"/snakemake-slurm.log "$WORK"/snakemake-local.log "$STATE"/slurmctld.log "$STATE"/slurmd.log \
                 "$MUNGE"/munged.log; do
            [ -s "$f" ] && { echo "--- $f"; tail -n 25 "$f"; }
        done
    fi
    log "shutting down SLURM and munge"
    if [ -s "$STATE/slurmctld.pid" ]; then
        squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null
    fi
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$MUNGE/munged.pid"; do
        [ -s "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    for f in slurm.conf gres.conf; do
        grep -qs "$MARK" "$SLURM_ETC/$f" && rm -f "$SLURM_ETC/$f"
    done
    if [ "$rc" = 0 ] && [ -z "${KEEP_SLURM_TEST:-}" ]; then
        rm -rf "$WORK"
    else
        log "kept $WORK"
    fi
    log "$([ "$rc" = 0 ] && echo PASSED || echo "FAILED (exit $rc)") in $(($(date +%s) - T0)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$MUNGE/munge.key" >/dev/null 2>&1
else
    dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
fi
chmod 400 "$MUNGE/munge.key"
munged --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.socket" --pid-file="$MUNGE/munged.pid" \
    --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed"
munge -n -S "$MUNGE/munge.socket" | unmunge -S "$MUNGE/munge.socket" >/dev/null || fail "munge does not work"
log "munged running (new key, socket $MUNGE/munge.socket)"

"$PY" "$HELPER" render-conf "$REPO/tests/slurm/slurm.conf.template" "$WORK/etc" --state-dir "$STATE" \
    --munge-socket "$MUNGE/munge.socket" --gpus 2 --ctld-port 16817 --slurmd-port 16818
cp "$WORK/etc/slurm.conf" "$WORK/etc/gres.conf" "$SLURM_ETC/"
slurmctld
slurmd
for _ in $(seq 60); do
    state="$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)"
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || fail "the node did not become idle (state: '${state:-none}')"
log "slurmctld and slurmd up: $(sinfo -h -N -o '%N %t cpus=%c mem=%mMB gres=%G partition=%P')"
log "sacct: '$(sacct -n 2>&1 | head -n1 || true)' -> job status via squeue (MinJobAge=600)"

# --- 3. the tiny grid on SLURM and locally ----------------------------------------------------------------
"$PY" "$HELPER" workspace "$REPO" "$WORK/slurm"
"$PY" "$HELPER" workspace "$REPO" "$WORK/local" --without-table1  # compared on runs only
log "workspaces $WORK/{slurm,local}: 3 sessions x 2 dialogs x 12 utterances, tiny encoders, 2 folds, missing" \
    "rates 0.0/0.5, 2 epochs, 1 seed, methods mla + late_fusion (+ concat, qmf at 0.0; fidelity: released_code,"\
    "late_fusion under cpm masks), one GPU per extract, tune and train job (--set-resources)"

SLURM_FLAGS=(--slurm-status-command squeue --slurm-no-account --slurm-init-seconds-before-status-checks 2
             --slurm-keep-successful-logs --verbose --set-resources extract:gpu=1 tune:gpu=1 train:gpu=1)
log "SLURM run: snakemake all --profile workflow/profiles/slurm ${SLURM_FLAGS[*]}"
t=$(date +%s)
(cd "$WORK/slurm" && snakemake all --profile workflow/profiles/slurm "${SLURM_FLAGS[@]}" \
    >"$WORK/snakemake-slurm.log" 2>&1) || fail "snakemake on SLURM failed (log: $WORK/snakemake-slurm.log)"
log "SLURM run done in $(($(date +%s) - t)) s"

squeue --states=all -h -O "JobID:14,State:14,tres-per-job:24,Comment:300" >"$WORK/squeue.txt"
"$PY" "$HELPER" jobs "$WORK/snakemake-slurm.log" "$WORK/squeue.txt" "$STATE/slurmctld.log" \
    "$WORK/slurm/.snakemake/slurm_logs" --workspace "$WORK/slurm" --expect-gpus
grep -q "executor: slurm\|Using executor slurm\|SLURM run ID" "$WORK/snakemake-slurm.log" \
    || fail "the Snakemake log does not show the slurm executor"

log "local run: snakemake all (profiles/default: cores all)"
t=$(date +%s)
(cd "$WORK/local" && snakemake all >"$WORK/snakemake-local.log" 2>&1) \
    || fail "local snakemake failed (log: $WORK/snakemake-local.log)"
log "local run done in $(($(date +%s) - t)) s"

# --- 4. same numbers ----------------------------------------------------------------------------------------
"$PY" "$HELPER" compare "$WORK/slurm" "$WORK/local"

#!/usr/bin/env bash
# The GPU benchmarks in one go, for a GPU node (docs/benchmarks.md): the main job's stages with the GPU-node
# profile, the roofline and the scale benchmark on CUDA. Every part writes its own log under OUT and a failing
# part does not stop the others; the figures are printed as they come.
#
#   bash bench/gpu_node.sh [OUT]            # OUT: where the logs go (default: bench-results/)
#   TINY=1 bash bench/gpu_node.sh /tmp/x    # rehearsal on any machine: the tiny config, a few seconds per part
#
# On a lent machine without the project's dependencies, run `bash ../shared/device/prepare.sh` here first and
# start with `bash .whl/on-device.sh &&`.
set -u
OUT="${1:-bench-results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
T0=$(date +%s)
part() {  # part NAME TIMEOUT_S COMMAND...: run it, log under OUT, say how it went
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(($(date +%s) - T0)) s in)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.log"
    echo "== $name: exit $rc"
}
if [ "${TINY:-0}" = 1 ]; then
    part workflow 300 "$PY" bench/bench_workflow.py --stage-commands --configfile .test/tiny.yaml --profile profiles/gpu-node
    part roofline 120 "$PY" bench/bench_roofline.py --epochs 1 --methods late_fusion mla --no-breakdown
    part scale 300 "$PY" bench/bench_scale.py --epochs 1 --methods late_fusion --sizes 200,2000 --utterances 60 --encoders tiny
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
part workflow 300 "$PY" bench/bench_workflow.py --stage-commands --profile profiles/gpu-node
part roofline 110 "$PY" bench/bench_roofline.py --device cuda --epochs 3 --cells 8 \
    --methods late_fusion sum concat mla qmf mmin tate
part scale 90 "$PY" bench/bench_scale.py --device cuda --epochs 2 --shards 4 --utterances 1200
echo "== done in $(($(date +%s) - T0)) s"

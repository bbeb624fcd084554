#!/bin/bash
# One GPU session's checks, as one script (a lent GPU machine is short of time, not of memory).
#
#   bash benchmarks/gpu.sh OUT_DIR
#
# Needs: jax with a GPU backend, scikit-learn, torch (for the peer row), and MNIST's IDX files in $UDL_DATA_DIR.
# 1. a smoke test (digits, 2 epochs, bfloat16) that stops the script if the stack is broken;
# 2. MNIST-70k with the published settings (300 SGD epochs, DEC maxiter 20,000), seeds 0-2, float32 and
#    bfloat16 side by side: two processes share the GPU, so their wall times are those of a shared GPU;
# 3. benchmarks.throughput (alone on the GPU; ~3 min on an H200) and benchmarks.scaling.
# Everything lands in OUT_DIR/gpu.tgz (written on exit, however the script ends): the logs, the throughput
# and scaling tables, and the MNIST workdirs less their checkpoints and saved parameters (a lent machine returns
# files of at most 16 MiB), to be unpacked into runs/ and published like any other run.
set -u
dest=${1:?usage: gpu.sh OUT_DIR}
out=/tmp/gpu_out
runs=$out/runs
mkdir -p "$runs" "$dest"
trap 'tar czf "$dest/gpu.tgz" --exclude=checkpoints --exclude=params -C "$out" .' EXIT
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
nvidia-smi -L
python3 -c 'import jax, flax, optax, orbax.checkpoint as o, sklearn; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "sklearn", sklearn.__version__, jax.devices())'

python3 -m experiments.benchmark --config=configs/benchmark.py:dataset=digits --config.seeds=1 \
  --config.methods=ae_kmeans,dec --config.pretrain.epochs=2 --config.cluster.maxiter=300 --config.dtype=bfloat16 \
  --workdir=/tmp/gpu_smoke > "$out/smoke.log" 2>&1 || { tail -30 "$out/smoke.log"; exit 1; }
echo "smoke test passed"

pipeline() {  # dtype
  timeout "${PIPELINE_SECONDS:-300}" python3 -m experiments.benchmark --config=configs/benchmark.py:dataset=mnist \
    --config.seeds=3 --config.methods=ae_kmeans,dec --config.dtype="$1" --config.pretrain.checkpoint_every=100 \
    --workdir="$runs/mnist_gpu_$1" > "$out/mnist_gpu_$1.log" 2>&1
  echo "mnist $1 rc=$?"
}
start=$(date +%s)
pipeline float32 & pipeline bfloat16 & wait
echo "pipelines took $(( $(date +%s) - start )) s"
tail -n 4 "$out"/mnist_gpu_*.log

export XLA_PYTHON_CLIENT_MEM_FRACTION=0.75
timeout "${THROUGHPUT_SECONDS:-240}" python3 -m benchmarks.throughput --peers=torch --workloads=ae,dec \
  --repeats=3 --batches=100 --out="$out/throughput" > "$out/throughput.log" 2>&1; echo "throughput rc=$?"
timeout 50 python3 -m benchmarks.scaling --epochs=5 --dec_chunks=10 --out="$out/scaling" \
  > "$out/scaling.log" 2>&1; echo "scaling rc=$?"
cat "$out/throughput/throughput.md" "$out/scaling/scaling.md" 2>/dev/null

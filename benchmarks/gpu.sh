#!/bin/bash
# One GPU session's checks, as one script: a lent machine has 15 minutes in all, start-up included.
#
#   bash benchmarks/gpu.sh OUT_DIR
#
# Needs: jax with a GPU backend, scikit-learn, umap-learn, and MNIST's and Fashion-MNIST's IDX files in
# $UDL_DATA_DIR. The checks (issue 16's and 17's 70k tables that a CPU core cannot finish in a session):
#   dec_da         MNIST-70k, DEC-DA's recipe (500 SGD epochs on shifted/rotated batches), AE+KMeans, DEC-DA,
#                  IDEC-DA; issue 17's bar is DEC-DA or IDEC-DA at ACC >= 0.97.
#   fashion_n2d    Fashion-MNIST-70k, N2D's whole recipe (reference=n2d: 1000 Adam epochs) as one seed batch with
#                  AE+KMeans; then one process per seed runs N2D, AE+GMM, IDEC, DCN and DKM (UMAP is single-threaded
#                  once seeded, so the seeds' UMAPs run side by side on the host's cores; N2D first, as
#                  issue 17's Fashion bar is some method at ACC >= 0.65, N2D's paper: 0.672); then the union table.
#                  Run on 2026-11-28 (results/fashion_mnist_n2d_1000, methods on the CPU); KEEP_PARAMS=fashion_n2d
#                  brings its autoencoders back.
#   mnist_n2d_zoo  MNIST-70k, the recipe of results/mnist_n2d (reference=n2d, 200 epochs): AE+KMeans, IDEC, DCN
#                  and DKM, which the CPU ran to 20,000 iterations on one seed only.
#   fashion_dk_n2d Fashion-MNIST-70k, DEC-keras's autoencoder (the default preset: 300 SGD epochs) as one seed
#                  batch with AE+KMeans, its parameters returned (KEEP_PARAMS) for N2D on this CPU (which ran
#                  seeds 0-3 since: results/fashion_mnist_dk_n2d; not in the default lanes any more).
#   fashion_dec_da Fashion-MNIST-70k, DEC-DA's recipe as dec_da.
#   dec_da_ref, fashion_dec_da_ref  the same with reference=dec_da, whose one difference is DEC-keras's in-order
#                  walk through the data in the clustering phase (against a seeded permutation): does the walk
#                  explain Fashion's DEC-DA below its paper? About a minute and a half for 3 seeds on an H200.
#   dcec, vade     MNIST-70k with DCEC's and VaDE's recipes (reference=dcec / reference=vade; VaDE with 300 of its
#                  3000 epochs, as the CPU's digits and MNIST-test tables); fashion_dcec, fashion_vade: the same on
#                  Fashion-MNIST-70k; mnist_test_dcec: DCEC on the MNIST test set, TEST_SEEDS (default 5) seeds.
# Run on 2026-11-27 (a3bb23a): dec_da, fashion_dec_da and mnist_n2d_zoo (published, less DKM, whose 3 seeds the
# CPU ran since); fashion_n2d's per-seed UMAPs did not finish in time (benchmarks/README.md). Run on 2026-11-28
# (a105782, lanes fashion_n2d, mnist_test_dcec, dcec+fashion_dcec, vade+fashion_vade): fashion_n2d's 1000-epoch
# autoencoders came back through KEEP_PARAMS and this CPU ran their methods; mnist_test_dcec's pretraining finished
# and a second call ran its DCEC (results/mnist_test_dcec); dcec stopped at conv_ae epoch 145 of 200 (four lanes
# sharing the GPU, 98 k samples/s), vade after its pretraining inside raw-pixel k-means (since left out of the
# recipes here), and a third call's VaDE took 60 s a seed, the seeds one after another. Still open: DCEC and VaDE on
# MNIST-70k and Fashion-MNIST-70k, the cross-method table's empty cells (results/README.md). The default lanes are
# DCEC's two, alone on the GPU (four lanes did not finish its 70k pretraining); the conv autoencoders (about 1 MB a
# seed) come back, so that this CPU can run DCEC from them if the GPU cannot. VaDE's two (LANES='vade
# fashion_vade', about 4 min) are a second call. The CPU needs about 3 h a seed on one core, more than a 3-hour
# session, and a workdir does not outlive its session here (MNIST-70k seeds run over 2026-11-27/28 were lost). The
# CPU rehearsal below of LANES='dcec fashion_dcec vade+fashion_vade' passed at bbd997c in 232 s on one core.
# LANES says what runs: lanes run at the same time and share the GPU (each process takes GPU_MEM_FRACTION of its
# memory); the checks of one lane, joined by '+', run in order. Seeds: SEEDS (default 3), one seed batch per run.
# Every process is stopped DEADLINE seconds after the script starts (default 540: the tool's 600 s limit less the
# packing), so what finished is kept: trials are recorded one by one, and a stopped run writes no table.
# For a CPU rehearsal: MNIST=digits FASHION=digits MNIST_TEST=digits SEEDS=1 TEST_SEEDS=1
# EXTRA='--config.pretrain.epochs=2 --config.cluster.maxiter=300 --config.cluster.method_kwargs.vade.epochs=2'.
# Everything lands in OUT_DIR/gpu.tgz (written on exit, however the script ends): the logs and the workdirs less
# their checkpoints and saved parameters (a lent machine returns files of at most 16 MiB), to be unpacked into
# runs/ and published like any other run. The workdirs stay in /tmp/gpu_out, so a second call on the still-warm
# machine resumes them (LANES=one check, EXTRA='--config.methods=...' to skip a method, as on 2026-11-28); a
# CPU rehearsal should remove /tmp/gpu_out first. The pretrained autoencoders of the workdirs named in KEEP_PARAMS
# (default mnist_dcec fashion_dcec; 13 MB per seed of DEC's dense network, about 1 MB of DCEC's) come back too, as
# OUT_DIR/params.tgz.part* (15 MiB each): `cat params.tgz.part* | tar xz -C DIR` next to gpu.tgz's runs/ lets this
# CPU run the remaining methods (N2D's UMAP, say) from them with the run's own command.
# How it was called through the device tool (the machine has jax but not this project's other libraries, and the
# checkout's ../shared does not travel): carry ['.devdata', '.whl'], both listed in .git/info/exclude, where .devdata
# holds copies of ../shared/data/{mnist,fashion_mnist} and .whl the wheels of flax, optax, orbax-checkpoint,
# ml_collections, umap-learn and pynndescent at this project's versions (pip download --no-deps --only-binary=:all:
# --python-version 3.12 ...); command: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
# export PYTHONPATH=/tmp/site:$PWD UDL_DATA_DIR=$PWD/.devdata && bash benchmarks/gpu.sh $OUT. The tree was then 63.6
# MiB of the 64 that travel (tracked 20.6, data 40.5, wheels 2.5) and results/ grows: carry only the datasets the
# chosen checks read, or move results/ (not read there) out of the checkout for the call. Earlier versions: 298cbf5 (throughput, scaling, float32 against bfloat16), 69fa051 (seed
# batching on MNIST-70k).
set -u
dest=${1:?usage: gpu.sh OUT_DIR}
out=/tmp/gpu_out
runs=$out/runs
mkdir -p "$runs" "$dest"
pack() {  # the logs and workdirs less checkpoints and parameters; the autoencoders of KEEP_PARAMS in 15 MiB parts
  tar czf "$dest/gpu.tgz" --exclude=checkpoints --exclude=params -C "$out" .
  local kept=$(cd "$runs" && for w in ${KEEP_PARAMS-mnist_dcec fashion_dcec}; do
                 ls -d "$w"/seed_*/ae/params 2>/dev/null; done)
  [[ -n $kept ]] && tar czf - -C "$runs" $kept | split -b 15M - "$dest/params.tgz.part"
  local parts=$(ls "$dest"/params.tgz.part* 2>/dev/null | wc -l)
  (( parts > 4 )) && echo "warning: $parts parts of parameters; a lent machine returns 64 MiB: name fewer KEEP_PARAMS"
  return 0
}
trap pack EXIT
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${GPU_MEM_FRACTION:-0.15}
start=$(date +%s) deadline=${DEADLINE:-540} seeds=${SEEDS:-3} mnist=${MNIST:-mnist} fashion=${FASHION:-fashion_mnist}
mnist_test=${MNIST_TEST:-mnist_test} test_seeds=${TEST_SEEDS:-5}  # MNIST-test tables have 5 seeds
nvidia-smi -L 2>/dev/null
python3 -c 'import jax, flax, optax, orbax.checkpoint as o, sklearn, umap; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "sklearn", sklearn.__version__, "umap", umap.__version__, jax.devices())' || exit 1

bench() {  # log-name workdir benchmark-flags...: one benchmark process, stopped at the deadline (checkpoints every
  # 100 epochs: when to save does not change a result, and fewer saves cost less GPU time)
  local name=$1 workdir=$2; shift 2
  local t0=$(date +%s) left=$(( deadline - $(date +%s) + start ))
  if (( left < 20 )); then echo "$name skipped: ${left} s left"; return; fi
  timeout "$left" python3 -m experiments.benchmark --processes=1 --workdir="$runs/$workdir" "$@" \
    --config.pretrain.checkpoint_every=100 ${EXTRA:-} \
    > "$out/$name.log" 2>&1
  echo "$name rc=$? wall $(( $(date +%s) - t0 )) s (at $(( $(date +%s) - start )) s)"
  tail -n 6 "$out/$name.log"
}
batch="--config.seeds=$seeds --config.seed_batch=$seeds"  # every seed as one seed batch
da_flags="$batch --config.methods=ae_kmeans,dec_da,idec_da --config.pretrain.augment=True --config.pretrain.epochs=500"
fashion_n2d() {
  local flags="--config=configs/benchmark.py:dataset=$fashion,reference=n2d"
  bench fashion_n2d fashion_n2d $flags $batch --config.methods=ae_kmeans
  for (( s = 0; s < seeds; s++ )); do
    bench fashion_n2d_seed$s fashion_n2d $flags --config.first_seed=$s --config.seeds=1 \
      --config.methods=n2d,ae_gmm,idec,dcn,dkm &
  done
  wait
  bench fashion_n2d_table fashion_n2d $flags --config.seeds=$seeds --config.methods=ae_kmeans,ae_gmm,n2d,idec,dcn,dkm
}
recipe() {  # check dataset reference benchmark-flags...: a paper's recipe in its workdir (VaDE with 300 of its 3000
  # epochs, as the CPU's tables of digits and MNIST-test), less raw-pixel k-means: on the GPU host it is CPU work
  # that four busy processes' threads starve (2026-11-28: a 70k seed not done at the deadline, 5 min after its
  # pretraining; 155 s on one core of this CPU, whose tables have it); the paper's own method runs first
  local name=$1 dataset=$2 ref=$3; shift 3
  local methods=ae_kmeans,dcec
  [[ $ref == vade ]] && methods=vade,ae_gmm,ae_kmeans && set -- "$@" --config.cluster.method_kwargs.vade.epochs=300
  bench "$name" "$name" --config=configs/benchmark.py:dataset=$dataset,reference=$ref --config.methods=$methods "$@"
}
check() {
  case $1 in
    dec_da) bench mnist_dec_da mnist_dec_da --config=configs/benchmark.py:dataset=$mnist $da_flags ;;
    fashion_dec_da) bench fashion_dec_da fashion_dec_da --config=configs/benchmark.py:dataset=$fashion $da_flags ;;
    dec_da_ref) bench $1 $1 --config=configs/benchmark.py:dataset=$mnist,reference=dec_da $da_flags ;;
    fashion_dec_da_ref) bench $1 $1 --config=configs/benchmark.py:dataset=$fashion,reference=dec_da $da_flags ;;
    fashion_n2d) fashion_n2d ;;
    fashion_dk_n2d) bench $1 $1 --config=configs/benchmark.py:dataset=$fashion $batch --config.methods=ae_kmeans ;;
    mnist_n2d_zoo) bench mnist_n2d_zoo mnist_n2d_gpu --config=configs/benchmark.py:dataset=$mnist,reference=n2d \
      --config.pretrain.epochs=200 $batch --config.methods=ae_kmeans,idec,dcn,dkm ;;
    dcec|vade) recipe mnist_$1 $mnist $1 $batch ;;
    fashion_dcec|fashion_vade) recipe $1 $fashion ${1#fashion_} $batch ;;
    mnist_test_dcec) recipe $1 $mnist_test dcec --config.seeds=$test_seeds --config.seed_batch=$test_seeds ;;
    *) echo "unknown check '$1' (dec_da, fashion_n2d, fashion_dk_n2d, mnist_n2d_zoo, fashion_dec_da, dec_da_ref," \
         "fashion_dec_da_ref, dcec, vade, fashion_dcec, fashion_vade, mnist_test_dcec)"; return 2 ;;
  esac
}
for lane in ${LANES:-dcec fashion_dcec}; do
  ( for c in ${lane//+/ }; do check "$c"; done ) &
done
wait
echo "all lanes done at $(( $(date +%s) - start )) s"

"""Seconds per iteration of a fine-tuning method's clustering loop (`udl_jax.dec.run`, the library's own path:
on a CPU with a conv model, one jitted call per step), on a dataset (the embedded digits by default) from a
fresh autoencoder.

  python -m benchmarks.clustering_step                        # DCEC on conv_ae (DCEC's recipe), digits
  python -m benchmarks.clustering_step --method=dec --model=ae
  UDL_DATA_DIR=../shared/data python -m benchmarks.clustering_step --dataset=mnist_test   # DCEC on 28x28 images

The time per iteration is the difference between runs of `--iters` and 3 x `--iters` iterations, divided by the
2 x `--iters` iterations between them (so k-means, compilation and the first target update cancel), median of
`--pairs`. Writes DEST/clustering_step.json.
"""

from __future__ import annotations

import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax
from absl import app, flags

from benchmarks import throughput
from udl_jax import config as udl_config, data, dec, methods, models, parallel, results

_METHOD = flags.DEFINE_string('method', 'dcec', 'A fine-tuning method.')
_MODEL = flags.DEFINE_string('model', 'conv_ae', 'The model it fine-tunes.')
_ITERS = flags.DEFINE_integer('iters', 140, 'Iterations of the shorter run (the longer runs three times as many).')
_PAIRS = flags.DEFINE_integer('pairs', 3, 'Timed pairs of runs (the median is reported).')
_DATASET = flags.DEFINE_string('dataset', 'digits', 'The dataset (udl_jax.data.load name).')
_DEST = flags.DEFINE_string('dest', 'benchmarks/results', 'Folder for clustering_step.json.')


def seconds_per_iteration(dataset: str, method: str, model_name: str, iters: int, pairs: int) -> list[float]:
  images = data.load(dataset)
  model = models.make_model(model_name, images.image_shape, udl_config.model_block(model_name))
  x = models.model_input(model_name, images.x)
  params = model.init(jax.random.key(0), x[:1])
  cluster = udl_config.method_cluster_block(udl_config.cluster_block(), method)
  cluster.update(tol=0.0, kmeans_n_init=1, update_interval=iters, checkpoint_every=10 ** 6)
  fine_tuner, mesh = methods.get(method, **udl_config.method_kwargs(cluster, method)), parallel.make_mesh()

  def run(maxiter: int) -> float:
    cluster.maxiter = maxiter
    start = time.perf_counter()
    dec.run(model, params, x, images.y, images.num_classes, fine_tuner, cluster, seed=0, mesh=mesh)
    return time.perf_counter() - start

  run(iters)  # compiles
  return [(run(3 * iters) - run(iters)) / (2 * iters) for _ in range(pairs)]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  seconds = seconds_per_iteration(_DATASET.value, _METHOD.value, _MODEL.value, _ITERS.value, _PAIRS.value)
  median = statistics.median(seconds)
  print(f'{_METHOD.value} on {_MODEL.value}, {_DATASET.value}, batch 256: {median:.3f} s per iteration '
        f'({", ".join(f"{s:.3f}" for s in seconds)})', flush=True)
  report = {'command': shlex.join(['python', '-m', 'benchmarks.clustering_step'] + sys.argv[1:]),
            'date': datetime.datetime.now().isoformat(timespec='seconds'), 'machine': throughput.machine(),
            'dataset': _DATASET.value, 'method': _METHOD.value, 'model': _MODEL.value,
            'seconds_per_iteration': seconds, 'median': median}
  results.write_json(Path(_DEST.value) / 'clustering_step.json', report)


if __name__ == '__main__':
  app.run(main)

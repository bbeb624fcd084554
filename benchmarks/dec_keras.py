"""DEC-keras, the reference Keras code of DEC (Xifeng Guo), run as a peer on udl_jax's data arrays and seeds.

  git clone https://github.com/XifengGuo/DEC-keras ~/DEC-keras       # its code stays outside this project
  pip install -e ".[bench]"                                          # tf-keras: Keras 2 on TensorFlow
  python -m benchmarks.dec_keras --dec_keras=~/DEC-keras --dataset=mnist_test --seeds=5 \
      --workdir=runs/dec_keras_mnist_test
  python -m benchmarks.dec_keras --dec_keras=~/DEC-keras --dataset=mnist_test --seeds=5 \
      --start_from=runs/mnist_test_reference --workdir=runs/dec_keras_mnist_test_same_start   # DEC phase only

Imports DEC.py from the folder given, with the module names it expects mapped onto today's packages (`keras` ->
tf_keras; `keras.engine.topology` -> tf_keras's Layer and InputSpec; its `metrics` module, whose ACC needs a
function scikit-learn removed, -> ACC / NMI / ARI computed as udl_jax computes them), and does what its __main__
does, with the dataset's preset of configs/benchmark.py (DEC-keras's settings: the MNIST family pretrains 300
epochs with SGD(1, 0.9) from VarianceScaling(1/3, fan_in, uniform), USPS 50 epochs of Adam from glorot_uniform;
then DEC with SGD(0.01, 0.9) on KL, batch 256, tol 0.001, maxiter 2e4, the preset's update interval). Each seed
seeds numpy, Python and TensorFlow (`tf_keras.utils.set_random_seed`); k-means (n_init 20) draws from numpy's
global generator, as DEC-keras leaves it.

Writes WORKDIR/trials.csv, summary.json and table.md in udl_jax's format, rows `ae_kmeans` (the k-means DEC
starts from: DEC-keras's first target update scores argmax Q at the k-means centres, the k-means assignment)
and `dec` (its returned labels, those of its last target update), with pretraining, k-means and DEC times;
WORKDIR/seed_S/ holds DEC-keras's own logs and weights. A seed already in trials.csv is skipped (resume).
With --start_from, DEC-keras's DEC starts from a udl_jax run's autoencoder and k-means of each seed (its
`ae_kmeans` row is then that start): the two DEC phases compared from one start.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
import types
from pathlib import Path

import numpy as np
from absl import app, flags

from configs import benchmark as benchmark_config
from udl_jax import config as udl_config, data, log, metrics, results

_DEC_KERAS = flags.DEFINE_string('dec_keras', None, 'Folder of a DEC-keras checkout (holds DEC.py).')
_DATASET = flags.DEFINE_string('dataset', 'mnist_test', 'Dataset preset of configs/benchmark.py.')
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Seeds 0 .. seeds-1 (first_seed ..).')
_FIRST_SEED = flags.DEFINE_integer('first_seed', 0, 'First seed.')
_PRETRAIN_EPOCHS = flags.DEFINE_integer('pretrain_epochs', 0, "Pretraining epochs (0: the preset's).")
_MAXITER = flags.DEFINE_integer('maxiter', 0, "DEC's maxiter (0: the preset's).")
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.')
_START_FROM = flags.DEFINE_string('start_from', '', "A udl_jax benchmark run folder of the same dataset and seeds: "
                                  "DEC-keras's DEC starts from each seed's autoencoder and k-means there instead of "
                                  'pretraining its own (the DEC phases of both codes from one start).')

METHODS = ['ae_kmeans', 'dec']


class _Scores:
  """DEC-keras's `metrics` module: udl_jax's ACC / NMI / ARI, and the labels of every target update."""

  def __init__(self):
    self.updates: list[np.ndarray] = []

  def acc(self, y_true, y_pred):
    self.updates.append(np.asarray(y_pred).copy())  # DEC.fit scores every update, ACC first
    return metrics.cluster_acc(y_true, y_pred)

  def nmi(self, y_true, y_pred):
    return metrics.evaluate(y_true, y_pred)['nmi']

  def ari(self, y_true, y_pred):
    return metrics.evaluate(y_true, y_pred)['ari']


def import_dec_keras(folder: Path, scores: _Scores):
  """DEC.py of `folder`, its imports served by tf_keras and `scores`."""
  try:
    import tf_keras
  except ImportError as e:
    raise app.UsageError(f'DEC-keras runs on tf-keras: pip install -e ".[bench]" ({e})') from e
  if not (folder / 'DEC.py').is_file():
    raise app.UsageError(f'--dec_keras={folder}: no DEC.py there (clone https://github.com/XifengGuo/DEC-keras)')
  topology = types.ModuleType('keras.engine.topology')
  topology.Layer, topology.InputSpec = tf_keras.layers.Layer, tf_keras.layers.InputSpec
  engine = types.ModuleType('keras.engine')
  engine.topology = topology
  aliases = {'keras': tf_keras, 'keras.backend': tf_keras.backend, 'keras.layers': tf_keras.layers,
             'keras.models': tf_keras.models, 'keras.optimizers': tf_keras.optimizers,
             'keras.callbacks': tf_keras.callbacks, 'keras.initializers': tf_keras.initializers,
             'keras.engine': engine, 'keras.engine.topology': topology,
             'metrics': types.SimpleNamespace(acc=scores.acc, nmi=scores.nmi, ari=scores.ari)}
  sys.modules.update(aliases)
  sys.path.insert(0, str(folder))
  try:
    return importlib.import_module('DEC')
  finally:
    sys.path.remove(str(folder))


def settings(dataset: str) -> dict:
  """DEC-keras's settings for `dataset`, read from the preset (the same numbers udl_jax's table runs with)."""
  c = benchmark_config.get_config(f'dataset={dataset}')
  cluster = udl_config.method_cluster_block(c.cluster, 'dec')
  return {'epochs': _PRETRAIN_EPOCHS.value or c.pretrain.epochs, 'batch_size': c.pretrain.batch_size,
          'optimizer': c.pretrain.optimizer, 'learning_rate': c.pretrain.learning_rate,
          'momentum': c.pretrain.momentum, 'init': c.model.kernel_init, 'update_interval': cluster.update_interval,
          'tol': cluster.tol, 'maxiter': _MAXITER.value or cluster.maxiter, 'cluster_lr': cluster.learning_rate,
          'cluster_momentum': cluster.momentum, 'cluster_batch_size': cluster.batch_size}


def _fresh_variance_scaling():
  """DEC-keras's VarianceScaling(1/3, fan_in, uniform), one instance shared by every layer, drawing new values at
  each layer as the Keras of 2018 did. tf_keras returns the same values from every call of an unseeded instance
  (the two 500x500 kernels would start equal), so each call here gets its own seed from numpy's seeded generator."""
  import tf_keras

  class FreshVarianceScaling(tf_keras.initializers.VarianceScaling):
    def __call__(self, shape, dtype=None, **kwargs):
      config = {**self.get_config(), 'seed': int(np.random.randint(2**31 - 1))}
      return tf_keras.initializers.VarianceScaling(**config)(shape, dtype=dtype, **kwargs)

  return FreshVarianceScaling(scale=1 / 3, mode='fan_in', distribution='uniform')


def udl_jax_start(run_dir: Path, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
  """(Keras weights of DEC-keras's autoencoder, k-means labels, centres) of a udl_jax run's seed: its pretrained
  dense autoencoder (Flax `encoder_i` is Keras' `encoder_i`; Flax `decoder_j` is Keras' `decoder_{3-j}`, both
  kernels (in, out)) and the k-means its fine-tuning methods started from."""
  from udl_jax import assign
  _, params, centres = assign.load_run(run_dir, 'ae_kmeans', seed)
  layers = params['params']
  n = sum(name.startswith('encoder_') for name in layers)
  order = [f'encoder_{i}' for i in range(n)] + [f'decoder_{j}' for j in range(n)]
  weights = [np.asarray(layers[name][k]) for name in order for k in ('kernel', 'bias')]
  labels = np.load(run_dir / f'seed_{seed}' / 'ae_kmeans.npz')['labels']
  return weights, labels, np.asarray(centres)


def run_seed(dec_module, scores: _Scores, x: np.ndarray, y: np.ndarray, n_clusters: int, s: dict, seed: int,
             folder: Path, start: tuple | None = None) -> list[dict]:
  """One seed of DEC-keras: the ae_kmeans and dec trial rows; from `start` (`udl_jax_start`) when given."""
  import tf_keras
  tf_keras.utils.set_random_seed(seed)  # Python, numpy and TensorFlow
  folder.mkdir(parents=True, exist_ok=True)
  init = _fresh_variance_scaling() if s['init'] == 'dec' else 'glorot_uniform'
  optimizer = tf_keras.optimizers.SGD(s['learning_rate'], momentum=s['momentum']) if s['optimizer'] == 'sgd' \
      else tf_keras.optimizers.Adam(s['learning_rate'])
  kmeans_seconds = []

  class TimedKMeans(dec_module.KMeans):  # the k-means DEC.fit starts from, timed apart from the DEC steps
    def fit_predict(self, *args, **kwargs):
      t0 = time.perf_counter()
      if start:  # udl_jax's k-means of this autoencoder
        self.cluster_centers_, out = start[2].astype(np.float32), start[1]
      else:
        out = super().fit_predict(*args, **kwargs)
      kmeans_seconds.append(time.perf_counter() - t0)
      return out

  dec_module.KMeans = TimedKMeans
  model = dec_module.DEC(dims=[x.shape[-1], 500, 500, 2000, 10], n_clusters=n_clusters, init=init)
  scores.updates.clear()
  with open(folder / 'dec_keras.log', 'w') as out, contextlib.redirect_stdout(out):
    t0 = time.perf_counter()
    if start:
      if [w.shape for w in model.autoencoder.get_weights()] != [w.shape for w in start[0]]:
        raise app.UsageError('--start_from: that run\'s autoencoder is not DEC-keras\'s d-500-500-2000-10')
      model.autoencoder.set_weights(start[0])
    else:
      model.pretrain(x=x, y=None, optimizer=optimizer, epochs=s['epochs'], batch_size=s['batch_size'],
                     save_dir=str(folder))
    pretrain_seconds = time.perf_counter() - t0
    model.compile(optimizer=tf_keras.optimizers.SGD(s['cluster_lr'], momentum=s['cluster_momentum']), loss='kld')
    t0 = time.perf_counter()
    labels = model.fit(x, y=y, tol=s['tol'], maxiter=s['maxiter'], batch_size=s['cluster_batch_size'],
                       update_interval=s['update_interval'], save_dir=str(folder))
    dec_seconds = time.perf_counter() - t0 - kmeans_seconds[0]
  updates = scores.updates
  converged = len(updates) > 1 and np.mean(updates[-1] != updates[-2]) < s['tol']
  iterations = (len(updates) - 1) * s['update_interval'] if converged else s['maxiter']
  base = {'seed': seed, 'protocol': 'transductive', 'pretrain_seconds': pretrain_seconds}
  return [{**base, 'method': 'ae_kmeans', 'iterations': None, 'seconds': kmeans_seconds[0],
           **metrics.evaluate(y, updates[0])},
          {**base, 'method': 'dec', 'iterations': iterations, 'seconds': dec_seconds,
           **metrics.evaluate(y, np.asarray(labels))}]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if not _DEC_KERAS.value:
    raise app.UsageError('--dec_keras=FOLDER (a clone of https://github.com/XifengGuo/DEC-keras) is required')
  workdir = Path(_WORKDIR.value or f'runs/dec_keras_{_DATASET.value}')
  dataset = data.load(_DATASET.value)
  x, y = dataset.flat, dataset.y  # the arrays udl_jax's dense AE trains on: flat, in [0, 1]
  s = settings(_DATASET.value)
  scores = _Scores()
  dec_module = import_dec_keras(Path(_DEC_KERAS.value).expanduser(), scores)
  seeds = list(range(_FIRST_SEED.value, _FIRST_SEED.value + _SEEDS.value))
  rows = results.read_trials(workdir / 'trials.csv') if (workdir / 'trials.csv').exists() else []
  for seed in seeds:
    if {(seed, m) for m in METHODS} <= {(r['seed'], r['method']) for r in rows}:
      continue
    log.info('DEC-keras seed %d: %s (%s)', seed, _DATASET.value, f"from {_START_FROM.value}'s autoencoder" if
             _START_FROM.value else f"{s['epochs']} epochs pretraining")
    start = udl_jax_start(Path(_START_FROM.value), seed) if _START_FROM.value else None
    new = run_seed(dec_module, scores, x, y, dataset.num_classes, s, seed, workdir / f'seed_{seed}', start)
    rows = [r for r in rows if r['seed'] != seed] + new
    results.write_trials(workdir / 'trials.csv', rows)
    log.info('DEC-keras seed %d: %s', seed, ', '.join(f"{r['method']} ACC {r['acc']:.3f} NMI {r['nmi']:.3f} "
                                                      f"({r['seconds']:.0f} s)" for r in new))
  rows = [r for r in rows if r['seed'] in seeds]
  summary = results.summarize(rows, METHODS)
  import tensorflow as tf
  import tf_keras
  results.write_json(workdir / 'summary.json', {
      'dataset': _DATASET.value, 'protocol': 'transductive', 'n_samples': len(x), 'seeds': seeds,
      'complete': True, 'missing_trials': 0, 'methods': summary, 'peer': 'DEC-keras', 'settings': s,
      'dec_keras': str(Path(_DEC_KERAS.value).expanduser()), 'start_from': _START_FROM.value,
      'environment': {**results.environment(), 'tensorflow': tf.__version__, 'tf_keras': tf_keras.__version__}})
  header = f'DEC-keras (reference code) on {_DATASET.value} ({len(x)} images), {len(seeds)} seeds, NMI arithmetic\n\n'
  results.write_atomic(workdir / 'table.md', header + results.markdown_table(summary) + results.table_notes(summary))
  print((workdir / 'table.md').read_text())


if __name__ == '__main__':
  app.run(main)

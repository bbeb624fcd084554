"""End-to-end time of the two phases against the data size: one pretraining epoch and 1,000 DEC iterations.

  python -m benchmarks.scaling                        # 10k, 35k, 70k samples of 784 features (MNIST's shape)
  python -m benchmarks.scaling --sizes=10000,70000 --out=/tmp/scaling

Runs the library's real loops (`train.fit`, `dec.run`) with the DEC autoencoder and DEC-keras's batch and update
interval, on seeded uniform random data: the time does not depend on the values, and this runs anywhere without
data files. Pretraining should grow linearly with N (an epoch is N / batch steps); the DEC steps per 1,000
iterations should not grow at all, only the target update over all N samples every `update_interval` steps does.
Writes OUT/scaling.json and OUT/scaling.md.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np
from absl import app, flags

from udl_jax import config as udl_config, dec, log, methods, models, results, train

_SIZES = flags.DEFINE_list('sizes', ['10000', '35000', '70000'], 'Data sizes (samples).')
_EPOCHS = flags.DEFINE_integer('epochs', 3, 'Pretraining epochs per size; the first (compilation) is not timed.')
_DEC_CHUNKS = flags.DEFINE_integer('dec_chunks', 8, 'DEC update intervals per size; the first is not timed.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/scaling', 'Folder for scaling.json and scaling.md.')

FEATURES = 784


def measure(n: int, cfg, dtype) -> dict:
  x = np.random.default_rng(0).uniform(size=(n, FEATURES)).astype(np.float32)
  model = models.make_model('ae', (28, 28, 1), cfg.model, dtype)
  state, history = train.fit('ae', model, cfg.model, cfg.pretrain, x, None, seed=0)
  epoch_seconds = float(np.mean([h['seconds'] for h in history[1:]]))
  cluster = udl_config.method_cluster_block(cfg.cluster, 'dec')
  cluster.tol, cluster.maxiter = 0.0, cluster.update_interval * _DEC_CHUNKS.value
  result = dec.run(model, state.params, x, None, 10, methods.get('dec'), cluster, seed=0)
  timed = result.history[1:-1]  # the first chunk compiles; the last update trains nothing
  iterations = cluster.update_interval * len(timed)
  steps = sum(h['chunk_seconds'] for h in timed)
  updates = sum(h['update_seconds'] for h in timed)
  return {'n': n, 'epoch_seconds': epoch_seconds, 'epoch_samples_per_s': n // cfg.pretrain.batch_size *
          cfg.pretrain.batch_size / epoch_seconds, 'dec_seconds_per_1000': (steps + updates) / iterations * 1000,
          'dec_steps_seconds_per_1000': steps / iterations * 1000,
          'dec_update_seconds_per_1000': updates / iterations * 1000, 'dec_iterations_timed': iterations}


def markdown(rows: list[dict], command: str) -> str:
  base, env = rows[0], results.environment()
  lines = [f'# Scaling with the data size\n\n- Command: `{command}`\n- Machine: {env["platform"]}, '
           f'{env["cpu_count"]} cores ({env["cpus_usable"]} usable by this process); backend {env["backend"]} '
           f'({env["device_kind"]} x{env["device_count"]}); XLA_FLAGS `{env["xla_flags"]}`\n',
           '| samples | pretrain epoch (s) | x the smallest | samples/s | DEC s / 1000 it | steps | target updates |',
           '| --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    lines.append(f"| {r['n']:,} | {r['epoch_seconds']:.2f} | {r['epoch_seconds'] / base['epoch_seconds']:.2f} "
                 f"(N x{r['n'] / base['n']:.1f}) | {r['epoch_samples_per_s']:,.0f} | "
                 f"{r['dec_seconds_per_1000']:.1f} | {r['dec_steps_seconds_per_1000']:.1f} | "
                 f"{r['dec_update_seconds_per_1000']:.1f} |")
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  cfg = ml_collections.ConfigDict()
  cfg.model, cfg.pretrain, cfg.cluster = (udl_config.model_block('ae'), udl_config.train_block(),
                                          udl_config.cluster_block())
  cfg.pretrain.update(epochs=_EPOCHS.value, optimizer='sgd', learning_rate=0.01, checkpoint_every=10**6)
  cfg.model.kernel_init = 'dec'
  dtype = models.compute_dtype(_DTYPE.value)
  command = 'python -m benchmarks.scaling ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
  out, rows = Path(_OUT.value), []
  for n in (int(s) for s in _SIZES.value):
    t0 = time.perf_counter()
    rows.append(measure(n, cfg, dtype))
    log.info('%d samples measured in %.0f s: %s', n, time.perf_counter() - t0, rows[-1])
    results.write_json(out / 'scaling.json', {'command': command, 'dtype': _DTYPE.value, 'rows': rows,
                                              'environment': results.environment()})
  results.write_atomic(out / 'scaling.md', markdown(rows, command))
  print(markdown(rows, command))


if __name__ == '__main__':
  app.run(main)

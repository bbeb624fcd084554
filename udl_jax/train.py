"""Autoencoder training: optax optimiser, flax TrainState, each epoch one jitted `lax.scan` over device batches.

The whole dataset lives on the device(s); an epoch draws a permutation, and a single `lax.scan` gathers and
trains on every full batch with no Python per step. Each epoch's key is `fold_in(seed key, epoch)`, so a run
resumed from a checkpoint follows exactly the path of an uninterrupted one.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flax.training import train_state
from jax.sharding import PartitionSpec as P

from udl_jax import augment, checkpoint, log, losses, models, parallel, progress
from udl_jax.errors import UserError

OPTIMIZERS = ('adam', 'sgd')


def make_optimizer(cfg) -> optax.GradientTransformation:
  """Adam (default) or SGD with momentum (DEC-keras) from a config block with optimizer/learning_rate/momentum."""
  if cfg.optimizer == 'adam':
    return optax.adam(cfg.learning_rate)
  if cfg.optimizer == 'sgd':
    return optax.sgd(cfg.learning_rate, momentum=cfg.momentum or None)
  raise UserError(f"unknown optimizer '{cfg.optimizer}'; valid: {', '.join(OPTIMIZERS)}")


def init_state(model, x_example: np.ndarray, tx, rng: jax.Array) -> train_state.TrainState:
  init_key, sample_key = jax.random.split(rng)
  params = jax.jit(model.init)(init_key, jnp.asarray(x_example[:1]), sample_key)  # one program, not op by op
  return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def _epoch_plan(x, key, batch_size: int):
  """Batch indices (num_batches, batch_size) of one shuffled epoch and one key per step."""
  num_batches = x.shape[0] // batch_size
  perm_key, step_key = jax.random.split(key)
  order = jax.random.permutation(perm_key, x.shape[0])[:num_batches * batch_size]
  return order.reshape(num_batches, batch_size), jax.random.split(step_key, num_batches)


def epoch_as_scan(model_name: str) -> bool:
  """False only for convolutions on the CPU backend (see `make_train_epoch`)."""
  return not (model_name in models.CONV_MODELS and jax.default_backend() == 'cpu')


def make_train_epoch(loss_fn: losses.LossFn, batch_size: int, mesh, scan: bool = True) -> Callable:
  """jit(epoch(state, x, key) -> (state, mean metrics)); the state buffer is donated.

  `scan=False` runs the same steps as a Python loop over one jitted step. Only for convolutions on the CPU:
  inside a loop body XLA:CPU falls back to a naive weight-gradient convolution (jax-ml/jax#12868), ~20x
  slower than the same step jitted alone. Both paths give the same steps, batches and keys.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state, x, idx, k):
    batch = parallel.shard_batch(x[idx], mesh)
    (loss, aux), grads = grad_fn(state.params, batch, k)
    return state.apply_gradients(grads=grads), {'loss': loss, **aux}

  if not scan:
    plan, jit_step = jax.jit(lambda x, key: _epoch_plan(x, key, batch_size)), jax.jit(step, donate_argnums=0)

    def looped_epoch(state, x, key):
      metrics = []
      for idx, k in zip(*plan(x, key)):
        state, m = jit_step(state, x, idx, k)
        metrics.append(m)
      return state, jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *metrics)
    return looped_epoch

  def epoch(state, x, key):
    def body(state, inputs):
      return step(state, x, *inputs)
    state, metrics = jax.lax.scan(body, state, _epoch_plan(x, key, batch_size))
    return state, jax.tree.map(jnp.mean, metrics)

  return jax.jit(epoch, donate_argnums=0)


def make_evaluate(loss_fn: losses.LossFn, n: int, mesh, chunk: int = 1024) -> Callable:
  """jit(evaluate(params, x, key) -> mean loss) over n rows of x, each device scoring its share of them.

  Each device takes n // devices rows and averages the losses of its full chunks (a remainder < chunk is left
  out, so every chunk weighs the same); the devices' means are averaged.
  """
  devices = mesh.devices.size
  local = n // devices
  if local == 0:
    raise UserError(f'the {n} validation samples cannot be split across {devices} devices; raise val_fraction')
  size = min(local, chunk)

  def local_mean(params, x, key):
    xs = x[:local // size * size].reshape(-1, size, *x.shape[1:])
    return jax.lax.pmean(jnp.mean(jax.lax.map(lambda b: loss_fn(params, b, key)[0], xs)), 'data')

  sharded = jax.shard_map(local_mean, mesh=mesh, in_specs=(P(), P('data'), P()), out_specs=P())
  return jax.jit(lambda params, x, key: sharded(params, x[:local * devices], key))


def fit(model_name: str, model, model_cfg, cfg, x_train: np.ndarray, x_val: np.ndarray | None, seed: int,
        ckpt_dir: str | Path | None = None, mesh=None,
        on_epoch: Callable[[int, dict], None] | None = None,
        image_shape: tuple[int, int, int] | None = None) -> tuple[train_state.TrainState, list[dict]]:
  """Trains `model` on model-ready arrays; resumes from `ckpt_dir` when it holds a checkpoint of this run.

  `cfg` is the run's `train` block (epochs, batch_size, optimizer, learning_rate, momentum, patience,
  checkpoint_every, augment: each batch randomly moved as `image_shape` images, `udl_jax.augment`). Stops early after `patience` epochs without a better validation loss (training loss when
  there is no validation set). A non-finite loss stops the run with an error before anything is saved.
  """
  mesh = mesh or parallel.make_mesh()
  if len(x_train) < cfg.batch_size:
    raise UserError(f'batch_size {cfg.batch_size} is larger than the {len(x_train)} training samples')
  parallel.check_batch_size(cfg.batch_size, mesh)
  loss_fn = losses.make_loss_fn(model_name, model, model_cfg)
  if cfg.get('augment', False):
    if image_shape is None:
      raise UserError(f'{model_name}: augment needs the image shape of the flat rows')
    train_loss = augment.augmented_loss(loss_fn, image_shape)  # the validation loss stays on clean images
  else:
    train_loss = loss_fn
  key = jax.random.key(seed)
  state = parallel.replicate(init_state(model, x_train, make_optimizer(cfg), jax.random.fold_in(key, 0)), mesh)
  x_train_dev = parallel.replicate(x_train, mesh)
  x_val_dev = None if x_val is None or len(x_val) == 0 else parallel.replicate(x_val, mesh)
  train_epoch = make_train_epoch(train_loss, cfg.batch_size, mesh, scan=epoch_as_scan(model_name))
  evaluate = make_evaluate(loss_fn, len(x_val), mesh) if x_val_dev is not None else None
  val_key = jax.random.fold_in(key, 2)

  mngr = checkpoint.manager(ckpt_dir) if ckpt_dir else None
  meta = {'epoch': 0, 'history': [], 'best': None, 'bad_epochs': 0, 'done': False}
  restored = checkpoint.restore_latest(mngr, state) if mngr else None
  if restored:
    state, meta = restored
    log.info('resumed from %s at epoch %d', ckpt_dir, meta['epoch'])
  samples_per_epoch = len(x_train) // cfg.batch_size * cfg.batch_size
  start, timed_epochs, timed_seconds = meta['epoch'], 0, 0.0
  progress.start_phase(f'{model_name} pretraining', cfg.epochs, 'epoch')
  for epoch in range(start + 1, cfg.epochs + 1):
    if meta['done']:
      break
    t0 = time.perf_counter()
    state, metrics = train_epoch(state, x_train_dev, jax.random.fold_in(jax.random.fold_in(key, 1), epoch))
    row = {'epoch': epoch, **{k: float(v) for k, v in metrics.items()}}
    if evaluate is not None:
      row['val_loss'] = float(evaluate(state.params, x_val_dev, val_key))
    seconds = time.perf_counter() - t0
    if not all(np.isfinite(v) for v in row.values()):
      raise UserError(f'{model_name}: loss became non-finite at epoch {epoch} ({row}); lower the learning '
                      'rate or check the data. No checkpoint was written from this state.')
    if epoch > start + 1 or epoch == cfg.epochs:  # the first epoch of a process includes compilation
      timed_epochs, timed_seconds = timed_epochs + 1, timed_seconds + seconds
    rate = samples_per_epoch / seconds
    row.update(seconds=seconds, samples_per_s=rate)
    meta['history'].append(row)
    monitored = row.get('val_loss', row['loss'])
    if meta['best'] is None or monitored < meta['best']:
      meta['best'], meta['bad_epochs'] = monitored, 0
    else:
      meta['bad_epochs'] += 1
    meta['epoch'] = epoch
    stop = cfg.patience and meta['bad_epochs'] >= cfg.patience
    meta['done'] = bool(stop or epoch == cfg.epochs)
    eta = progress.format_duration(timed_seconds / timed_epochs * (cfg.epochs - epoch)) if timed_epochs else \
        '? (the first epoch compiled)'
    log.detail('%s epoch %d/%d loss %.5f%s | %.0f samples/s | ETA %s%s', model_name, epoch, cfg.epochs,
               row['loss'], f" val {row['val_loss']:.5f}" if 'val_loss' in row else '', rate, eta,
               ' | early stop' if stop else '')
    progress.advance(epoch)
    if mngr and (meta['done'] or epoch % cfg.checkpoint_every == 0):
      checkpoint.save(mngr, epoch, state, meta)
    if on_epoch:
      on_epoch(epoch, row)
  if mngr:
    mngr.close()
  progress.end_phase()
  if meta['history']:
    log.info('%s pretraining: %d epochs, final loss %.5f', model_name, meta['epoch'], meta['history'][-1]['loss'])
  return state, meta['history']


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Index arrays of a seeded random train/validation split."""
  order = np.random.default_rng(seed).permutation(n)
  n_val = int(round(n * val_fraction))
  return np.sort(order[n_val:]), np.sort(order[:n_val])


@functools.lru_cache(maxsize=None)
def _sharded_encode(model, mesh):
  """One jitted, data-sharded encoder per model and mesh, so repeated `embed` calls reuse its compilations."""
  return parallel.sharded_map(lambda p, b: model.apply(p, b, method=model.encode), mesh)


def embed(model, params, x: np.ndarray, mesh=None) -> np.ndarray:
  """The encoder's output for all of x, each device encoding its share (what k-means and DEC start from)."""
  mesh = mesh or parallel.make_mesh()
  return parallel.to_host(_sharded_encode(model, mesh)(parallel.replicate(params, mesh),
                                                       parallel.replicate(x, mesh)))

"""Autoencoder training: optax optimiser, flax TrainState, each epoch one jitted `lax.scan` over device batches.

The whole dataset lives on the device(s); an epoch draws a permutation, and a single `lax.scan` gathers and
trains on every full batch with no Python per step (convolutional models on a CPU: one jitted step per call,
`epoch_as_scan`, as XLA:CPU's convolution gradients are slow inside a loop body). Each epoch's key is
`fold_in(seed key, epoch)`, so a run resumed from a checkpoint follows exactly the path of an uninterrupted one.
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

import flax.linen as nn
from flax.training import train_state
from jax.sharding import PartitionSpec as P

from udl_jax import augment, checkpoint, log, losses, models, parallel, progress, seed_batch
from udl_jax.errors import Diverged, UserError

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


def _epoch_plan(n: int, key, batch_size: int, rows=None, partial: int = 0):
  """Batch indices (num_batches, batch_size) of one shuffled epoch over n rows and one key per step; the
  indices are into `rows` (the seed's training rows of a shared array) when given. With `partial` > 0 also
  the first `partial` of the rows left over (Keras' last partial batch) and their key."""
  num_batches = n // batch_size
  perm_key, step_key = jax.random.split(key)
  order = jax.random.permutation(perm_key, n)
  if rows is not None:
    order = rows[order]
  full = (order[:num_batches * batch_size].reshape(num_batches, batch_size), jax.random.split(step_key, num_batches))
  if not partial:
    return full
  rest = num_batches * batch_size
  return full, (order[rest:rest + partial], jax.random.fold_in(step_key, num_batches))


def partial_batch_size(n: int, batch_size: int, mesh) -> int:
  """The rows of an epoch's last partial batch (Keras trains on them), cut to a multiple of the devices."""
  devices = mesh.devices.size
  return n % batch_size // devices * devices


def _epoch_metrics(full, last, batch_size: int, partial: int):
  """An epoch's metrics from those of its full batches (stacked on a leading axis) and, when `partial` rows
  trained as a last smaller batch, its `last`: the mean over samples, as Keras reports an epoch."""
  if not partial:
    return jax.tree.map(jnp.mean, full)
  return jax.tree.map(lambda m, l: (jnp.sum(m) * batch_size + l * partial) / (m.shape[0] * batch_size + partial),
                      full, last)


def epoch_as_scan(model: str | nn.Module) -> bool:
  """False only for convolutions on the CPU backend (see `make_train_epoch`); `model`: a name or a module."""
  return not (models.is_conv(model) and jax.default_backend() == 'cpu')


def _make_step(loss_fn: losses.LossFn, mesh) -> Callable:
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state, x, idx, k):
    batch = parallel.shard_batch(x[idx], mesh)
    (loss, aux), grads = grad_fn(state.params, batch, k)
    return state.apply_gradients(grads=grads), {'loss': loss, **aux}
  return step


def _scanned_epoch(loss_fn: losses.LossFn, batch_size: int, mesh, partial_batch: bool = False) -> Callable:
  """epoch(state, x, key, rows) -> (state, mean metrics), unjitted: every step of the epoch as one lax.scan
  (then, with `partial_batch`, one step on the rows left over, as Keras' fit does)."""
  step = _make_step(loss_fn, mesh)

  def epoch(state, x, key, rows=None):
    def body(state, inputs):
      return step(state, x, *inputs)
    n = x.shape[0] if rows is None else rows.shape[0]
    partial = partial_batch_size(n, batch_size, mesh) if partial_batch else 0
    plan = _epoch_plan(n, key, batch_size, rows, partial)
    state, metrics = jax.lax.scan(body, state, plan[0] if partial else plan)
    last = None
    if partial:
      state, last = step(state, x, *plan[1])
    return state, _epoch_metrics(metrics, last, batch_size, partial)
  return epoch


def make_train_epoch(loss_fn: losses.LossFn, batch_size: int, mesh, scan: bool = True,
                     partial_batch: bool = False) -> Callable:
  """jit(epoch(state, x, key, rows=None) -> (state, mean metrics)); the state buffer is donated. `rows`: the
  indices of the training rows in x (all of x when None).

  `scan=False` runs the same steps as a Python loop over one jitted step. Only for convolutions on the CPU:
  inside a loop body XLA:CPU falls back to a naive weight-gradient convolution (jax-ml/jax#12868), ~20x
  slower than the same step jitted alone. Both paths give the same steps, batches and keys.
  """
  if not scan:
    step = _make_step(loss_fn, mesh)
    plan = jax.jit(lambda n, key, rows, partial: _epoch_plan(n, key, batch_size, rows, partial),
                   static_argnums=(0, 3))
    jit_step = jax.jit(step, donate_argnums=0)

    def looped_epoch(state, x, key, rows=None):
      n = x.shape[0] if rows is None else rows.shape[0]
      partial = partial_batch_size(n, batch_size, mesh) if partial_batch else 0
      epoch_plan = plan(n, key, rows, partial)
      metrics, last = [], None
      for idx, k in zip(*(epoch_plan[0] if partial else epoch_plan)):
        state, m = jit_step(state, x, idx, k)
        metrics.append(m)
      if partial:
        state, last = jit_step(state, x, *epoch_plan[1])
      return state, _epoch_metrics(jax.tree.map(lambda *v: jnp.stack(v), *metrics), last, batch_size, partial)
    return looped_epoch
  return jax.jit(_scanned_epoch(loss_fn, batch_size, mesh, partial_batch), donate_argnums=0)


def make_seeds_epoch(loss_fn: losses.LossFn, batch_size: int, mesh, num_seeds: int,
                     partial_batch: bool = False) -> Callable:
  """jit(epoch(states, x, rows, keys, active) -> (states, metrics)): one epoch of S seeds as one program
  (`udl_jax.seed_batch`). x is shared; rows (S, n) are each seed's training rows, keys (S,) its epoch keys; the seeds
  not `active` (S,) keep their state. Metrics have a leading seed axis. The states are donated."""
  epoch = seed_batch.over_seeds(_scanned_epoch(loss_fn, batch_size, mesh, partial_batch), num_seeds, (0, None, 0, 0))

  def seeds_epoch(states, x, rows, keys, active):
    new, metrics = epoch(states, x, keys, rows)
    return seed_batch.keep_inactive(active, new, states), metrics
  return jax.jit(seeds_epoch, donate_argnums=0)


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
        image_shape: tuple[int, int, int] | None = None, **objective) -> tuple[train_state.TrainState, list[dict]]:
  """Trains `model` on model-ready arrays; resumes from `ckpt_dir` when it holds a checkpoint of this run.

  `cfg` is the run's `train` block (epochs, batch_size, optimizer, learning_rate, momentum, patience,
  checkpoint_every, augment: each batch randomly moved as `image_shape` images, `udl_jax.augment`). Stops early
  after `patience` epochs without a better validation loss (training loss when there is no validation set), and
  pretraining stops once its autoencoder has collapsed (`_stop_if_collapsed`). A non-finite loss stops the run
  with an error before anything is saved. `fit_seeds` with one seed; `objective`:
  its loss_fn, tx, initial_params and track (of this seed).
  """
  for key in ('initial_params', 'track'):
    if objective.get(key) is not None:
      objective[key] = [objective[key]]
  n_train, n_val = len(x_train), 0 if x_val is None else len(x_val)
  x = x_train if not n_val else np.concatenate([x_train, x_val])
  split = (np.arange(n_train), np.arange(n_train, n_train + n_val))
  [(state, history)] = fit_seeds(model_name, model, model_cfg, cfg, x, [split], [seed],
                                 None if ckpt_dir is None else [ckpt_dir], mesh,
                                 None if on_epoch is None else lambda epoch, rows: on_epoch(epoch, rows[seed]),
                                 image_shape, **objective)
  return state, history


def fit_seeds(model_name: str, model, model_cfg, cfg, x: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
              seed_ids: list[int], ckpt_dirs: list | None = None, mesh=None,
              on_epoch: Callable[[int, dict], None] | None = None,
              image_shape: tuple[int, int, int] | None = None, loss_fn: losses.LossFn | None = None,
              tx: optax.GradientTransformation | None = None,
              initial_params: list | None = None,
              track: list[Callable[[dict], dict]] | None = None) -> list[tuple[train_state.TrainState, list[dict]]]:
  """`fit` for several seeds at once, as one program (`udl_jax.seed_batch`): [(state, history)] per seed.

  x is shared by the seeds; splits[i] = (training rows, validation rows) of seed i, indices into x, of the same
  sizes for every seed. Each seed has its own initialisation, keys, early stopping and checkpoints
  (ckpt_dirs[i]); its result equals a run of it alone. Each seed's `seconds` in the history are its share of
  the epoch's time. on_epoch(epoch, {seed: row}) sees the seeds that trained that epoch. A method with an
  objective of its own (VaDE) gives its `loss_fn(params, batch, key) -> (loss, aux)`, optimiser `tx` and
  `initial_params` per seed instead of the model's loss, the config's optimiser and a fresh initialisation, and
  may `track` each seed's progress: track[i](params) -> fields added to that seed's row at each checkpoint epoch
  (and its last), before the save, so that a resumed history equals an uninterrupted one (VaDE's ACC / NMI).
  """
  mesh = mesh or parallel.make_mesh()
  num_seeds = len(seed_ids)
  n_train, n_val = len(splits[0][0]), len(splits[0][1])
  if any((len(tr), len(va)) != (n_train, n_val) for tr, va in splits):
    raise ValueError('the seeds of a batch need training and validation splits of the same sizes')
  if n_train < cfg.batch_size:
    raise UserError(f'batch_size {cfg.batch_size} is larger than the {n_train} training samples')
  parallel.check_batch_size(cfg.batch_size, mesh)
  # With its own objective (a method such as vade trains its model here) it is not the autoencoder's pretraining.
  phase = 'pretraining' if loss_fn is None else 'training'
  loss_fn = loss_fn or losses.make_loss_fn(model_name, model, model_cfg)
  if cfg.get('augment', False):
    if image_shape is None:
      raise UserError(f'{model_name}: augment needs the image shape of the flat rows')
    train_loss = augment.augmented_loss(loss_fn, image_shape)  # the validation loss stays on clean images
  else:
    train_loss = loss_fn
  keys = [jax.random.key(seed) for seed in seed_ids]
  tx = tx or make_optimizer(cfg)
  states = [init_state(model, x, tx, jax.random.fold_in(key, 0)) for key in keys] if initial_params is None else \
      [train_state.TrainState.create(apply_fn=None, params=params, tx=tx) for params in initial_params]
  x_dev = parallel.replicate(x, mesh)
  train_rows = parallel.replicate(np.stack([tr for tr, _ in splits]).astype(np.int32), mesh)
  partial_batch = cfg.get('partial_batch', False)
  train_epoch = _seeds_epoch(model_name, train_loss, cfg.batch_size, mesh, num_seeds, partial_batch)
  evaluate = None
  if n_val:
    val_rows = parallel.replicate(np.stack([va for _, va in splits]).astype(np.int32), mesh)
    one = make_evaluate(loss_fn, n_val, mesh)
    evaluate = jax.jit(seed_batch.over_seeds(lambda params, x, rows, key: one(params, x[rows], key), num_seeds,
                                             (0, None, 0, 0)))
    val_keys = jnp.stack([jax.random.fold_in(key, 2) for key in keys])

  mngrs = [checkpoint.manager(d) for d in ckpt_dirs] if ckpt_dirs else [None] * num_seeds
  metas = []
  for i, mngr in enumerate(mngrs):
    meta = {'epoch': 0, 'history': [], 'best': None, 'bad_epochs': 0, 'done': False}
    restored = checkpoint.restore_latest(mngr, states[i]) if mngr else None
    if restored:
      states[i], meta = restored
      log.info('resumed from %s at epoch %d', ckpt_dirs[i], meta['epoch'])
    metas.append(meta)
  states = parallel.replicate(seed_batch.stack(states), mesh)
  epoch_keys = jax.jit(jax.vmap(lambda key, epoch: jax.random.fold_in(jax.random.fold_in(key, 1), epoch),
                                in_axes=(0, None)))
  keys = jnp.stack(keys)
  samples_per_epoch = n_train // cfg.batch_size * cfg.batch_size + \
      (partial_batch_size(n_train, cfg.batch_size, mesh) if partial_batch else 0)
  start = min([m['epoch'] for m in metas if not m['done']], default=cfg.epochs)
  timed_epochs, timed_seconds = 0, 0.0
  label = f'{model_name} {phase}' + (f' ({num_seeds} seeds)' if num_seeds > 1 else '')
  progress.start_phase(label, cfg.epochs, 'epoch')
  for epoch in range(start + 1, cfg.epochs + 1):
    training = [i for i, m in enumerate(metas) if not m['done'] and m['epoch'] < epoch]
    if not training:
      break
    t0 = time.perf_counter()
    active = jnp.asarray([i in training for i in range(num_seeds)])
    states, metrics = train_epoch(states, x_dev, train_rows, epoch_keys(keys, epoch), active)
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    if evaluate is not None:
      metrics['val_loss'] = np.asarray(evaluate(states.params, x_dev, val_rows, val_keys))
    seconds = (time.perf_counter() - t0) / len(training)  # each seed's share
    rows = {}
    for i in training:
      meta, seed = metas[i], seed_ids[i]
      row = {'epoch': epoch, **{k: float(v[i]) for k, v in metrics.items()}}
      if not all(np.isfinite(v) for v in row.values()):
        raise Diverged(f'{model_name}: loss became non-finite at epoch {epoch} of seed {seed} ({row}); lower '
                       'the learning rate or check the data. No checkpoint was written from this state.', epoch)
      row.update(seconds=seconds, samples_per_s=samples_per_epoch / seconds)
      meta['history'].append(row)
      monitored = row.get('val_loss', row['loss'])
      if meta['best'] is None or monitored < meta['best']:
        meta['best'], meta['bad_epochs'] = monitored, 0
      else:
        meta['bad_epochs'] += 1
      meta['epoch'] = epoch
      stop = cfg.patience and meta['bad_epochs'] >= cfg.patience
      meta['done'] = bool(stop or epoch == cfg.epochs)
      rows[seed] = row
      log.detail('%s seed %d epoch %d/%d loss %.5f%s | %.0f samples/s%s', model_name, seed, epoch, cfg.epochs,
                 row['loss'], f" val {row['val_loss']:.5f}" if 'val_loss' in row else '', row['samples_per_s'],
                 ' | early stop' if stop else '')
    if phase == 'pretraining' and epoch % COLLAPSE_CHECK_EVERY == 0:
      for i in training:
        if metas[i]['done']:  # its last epoch (or an early stop): nothing left to save, and the benchmark checks it
          continue
        # on host copies, as every process holds them whole: each process decides the same
        params = jax.tree.map(parallel.to_host, seed_batch.take(states.params, i))
        _stop_if_collapsed(model, params, x[splits[i][0][:COLLAPSE_ROWS]], metas[i], seed_ids[i], cfg.epochs)
    if epoch > start + 1 or epoch == cfg.epochs:  # the first epoch of a process includes compilation
      timed_epochs, timed_seconds = timed_epochs + 1, timed_seconds + seconds * len(training)
    eta = progress.format_duration(timed_seconds / timed_epochs * (cfg.epochs - epoch)) if timed_epochs else \
        '? (the first epoch compiled)'
    log.detail('%s epoch %d/%d | ETA %s', label, epoch, cfg.epochs, eta)
    progress.advance(epoch)
    for i in training:
      if not (metas[i]['done'] or epoch % cfg.checkpoint_every == 0):
        continue
      if track:
        tracked = track[i](jax.tree.map(parallel.to_host, seed_batch.take(states.params, i)))
        metas[i]['history'][-1].update(tracked)
        log.detail('%s seed %d epoch %d: %s', model_name, seed_ids[i], epoch,
                   ' '.join(f'{k} {v:.4f}' for k, v in tracked.items()))
      if mngrs[i]:
        checkpoint.save(mngrs[i], epoch, seed_batch.take(states, i), metas[i])
    if on_epoch:
      on_epoch(epoch, rows)
  for mngr in filter(None, mngrs):
    mngr.close()
  progress.end_phase()
  for seed, meta in zip(seed_ids, metas):
    if meta['history']:
      log.info('%s pretraining of seed %d: %d epochs, final loss %.5f', model_name, seed, meta['epoch'],
               meta['history'][-1]['loss'])
  return [(seed_batch.take(states, i), meta['history']) for i, meta in enumerate(metas)]


# Reconstructions that vary across images less than this fraction of the images' own variance: one image for all.
COLLAPSE_FRACTION = 1e-4
COLLAPSE_ROWS = 2048  # how many rows the check looks at: a collapsed autoencoder gives one output for every row


def collapse_reason(model, params, x: np.ndarray) -> str | None:
  """Why a pretrained autoencoder learned nothing, or None: its reconstructions of the rows x are (all but) one
  image, whatever the input. That is what a layer whose ReLUs all died does (typically in the first steps of too
  large a learning rate): the loss stays finite, at the mean image's error, and the embedding carries nothing.
  The caller passes a sample (`COLLAPSE_ROWS` rows)."""
  out = jax.jit(model.apply)(params, x, jax.random.key(0))
  recon = np.asarray(out['recon'] if 'recon' in out else jax.nn.sigmoid(out['logits']))
  spread, data_spread = float(np.var(recon, axis=0).mean()), float(np.var(x, axis=0).mean())
  if spread >= COLLAPSE_FRACTION * data_spread:
    return None
  return (f'autoencoder collapsed (its reconstructions vary by {spread:.1e} across images, the images by '
          f'{data_spread:.1e}: one output for every input)')


# Pretraining looks for a collapse every this many epochs and stops a seed that two checks in a row find collapsed.
# Fixed, not tied to checkpoint_every, so that when checkpoints are saved does not change where a run stops.
COLLAPSE_CHECK_EVERY = 10


def _stop_if_collapsed(model, params, x_sample: np.ndarray, meta: dict, seed: int, epochs: int) -> None:
  """Ends a seed's pretraining early when its autoencoder has collapsed (`collapse_reason`) at two checks in a
  row: a layer whose ReLUs all died passes no gradient back, so the rest of the epochs (hours on 70k images)
  would change nothing; the benchmark then records the methods of that seed as failed, as at the end."""
  reason = collapse_reason(model, params, x_sample)
  if reason and meta.get('collapsed_at'):
    meta['done'] = True
    log.info('seed %d: %s at epochs %d and %d: its pretraining stops at epoch %d of %d', seed, reason,
             meta['collapsed_at'], meta['epoch'], meta['epoch'], epochs)
  meta['collapsed_at'] = meta['epoch'] if reason else None


def _seeds_epoch(model_name: str, loss_fn: losses.LossFn, batch_size: int, mesh, num_seeds: int,
                 partial_batch: bool) -> Callable:
  """The epoch `fit_seeds` runs: `make_seeds_epoch`, or for convolutions on the CPU (no scan) the looped epoch
  of `make_train_epoch` on a single seed."""
  if epoch_as_scan(model_name):
    return make_seeds_epoch(loss_fn, batch_size, mesh, num_seeds, partial_batch)
  if num_seeds > 1:
    raise ValueError(f'{model_name} on the CPU trains seed by seed (no scan): use a seed batch of 1')
  looped = make_train_epoch(loss_fn, batch_size, mesh, scan=False, partial_batch=partial_batch)

  def one_seed(states, x, rows, keys, active):
    state, metrics = looped(seed_batch.take(states, 0), x, keys[0], rows[0])
    return jax.tree.map(lambda a: a[None], (state, metrics))
  return one_seed


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

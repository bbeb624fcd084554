"""The DEC-style clustering loop, shared by every registered method (DEC, IDEC, user losses).

  1. Embed the data with the pretrained encoder; k-means (n_init=20) on the embedding gives the centres.
  2. Every `update_interval` steps: Q on the full data, P = method.target(Q), labels = argmax Q; stop when fewer
     than `tol` of the labels changed since the last update (or at `maxiter`).
  3. Between two updates, `update_interval` SGD steps on (encoder [+ decoder], centres) run as one `lax.scan`.
Batches walk through one fixed seeded permutation of the data, wrapping around, so a run resumed from a
checkpoint (taken at an update boundary) repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from udl_jax import checkpoint, clustering, log, metrics, parallel
from udl_jax.errors import UserError
from udl_jax.methods import ClusteringMethod
from udl_jax.train import embed, format_duration, make_optimizer


@dataclasses.dataclass
class ClusteringResult:
  labels: np.ndarray        # (N,) final hard assignments
  q: np.ndarray             # (N, K) final soft assignments
  centres: np.ndarray       # (K, D)
  embedding: np.ndarray     # (N, D) final encoder output
  init_labels: np.ndarray   # k-means labels the run started from
  iterations: int
  history: list[dict]
  params: dict              # {'ae': autoencoder params, 'centres': ...}


def _forward(model, method: ClusteringMethod, alpha: float):
  """(params, x) -> (q, recon or None): the method's view of a batch."""
  def forward(params, x):
    if method.needs_decoder:
      out = model.apply(params['ae'], x)
      z, recon = out['z'], out['recon']
    else:
      z, recon = model.apply(params['ae'], x, method=model.encode), None
    return clustering.soft_assignment(z, params['centres'], alpha), recon
  return forward


def make_predict(model, alpha: float, mesh):
  """jit(predict(params, x) -> (q, z)) over the full data, each device computing its share of the rows."""
  def predict(params, rows):
    z = model.apply(params['ae'], rows, method=model.encode)
    return clustering.soft_assignment(z, params['centres'], alpha), z
  return parallel.sharded_map(predict, mesh)


def predict_on_host(model, params, x: np.ndarray, alpha: float, mesh=None) -> tuple[np.ndarray, np.ndarray]:
  """(q, z) of a finished model's params ({'ae', 'centres'}) for all of x, as numpy arrays.

  `alpha` must be the method's own (`config.method_cluster_block(cluster, method).alpha`), as it trained with.
  """
  mesh = mesh or parallel.make_mesh()
  q, z = make_predict(model, alpha, mesh)(parallel.replicate(params, mesh), parallel.replicate(x, mesh))
  return parallel.to_host(q), parallel.to_host(z)


def make_train_chunk(model, method: ClusteringMethod, alpha: float, batch_size: int, mesh):
  """jit(chunk(state, x, p, order, first_step, num_steps) -> (state, mean loss)): steps between two updates."""
  forward = _forward(model, method, alpha)

  def loss_fn(params, x, p):
    q, recon = forward(params, x)
    return method.loss(q, p, x, recon)

  grad_fn = jax.value_and_grad(loss_fn)

  def chunk(state, x, p, order, first_step, num_steps):
    n = x.shape[0]

    def step(state, s):
      idx = order[(s * batch_size + jnp.arange(batch_size)) % n]
      loss, grads = grad_fn(state.params, parallel.shard_batch(x[idx], mesh), parallel.shard_batch(p[idx], mesh))
      return state.apply_gradients(grads=grads), loss

    state, loss = jax.lax.scan(step, state, first_step + jnp.arange(num_steps))
    return state, jnp.mean(loss)

  return jax.jit(chunk, static_argnums=5, donate_argnums=0)


def run(model, ae_params, x: np.ndarray, y: np.ndarray | None, n_clusters: int, method: ClusteringMethod, cfg,
        seed: int, ckpt_dir: str | Path | None = None, mesh=None,
        init: tuple[np.ndarray, np.ndarray] | None = None) -> ClusteringResult:
  """Clusters model-ready data `x` with `method`, starting from the autoencoder `ae_params`.

  `cfg` is the method's resolved `cluster` block (`config.method_cluster_block`: alpha, batch_size, optimizer,
  learning_rate, momentum, update_interval, tol, maxiter, kmeans_n_init, checkpoint_every). `init` = (labels,
  centres) of a k-means already run on this embedding (the benchmark shares it with AE+KMeans); computed here
  when None.
  """
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch_size(cfg.batch_size, mesh)
  if len(x) < cfg.batch_size:
    raise UserError(f'batch_size {cfg.batch_size} is larger than the {len(x)} samples to cluster')
  x_dev = parallel.replicate(x, mesh)
  predict = make_predict(model, cfg.alpha, mesh)
  # Host copies of the labels: replicated, so that every process can read them.
  hard_labels = jax.jit(lambda q: jnp.argmax(q, axis=1).astype(jnp.int32), out_shardings=parallel.replicated(mesh))
  if init is None:
    z = embed(model, ae_params, x, mesh)
    init = parallel.computed_on_main(lambda: clustering.kmeans(z, n_clusters, seed, cfg.kmeans_n_init),
                                     (np.zeros(len(x), np.int32), np.zeros((n_clusters, z.shape[1]), np.float32)))
  init_labels, init_centres = init
  tx = make_optimizer(cfg)
  # A copy: the training chunks donate their state, and the caller's autoencoder params must survive.
  params = jax.tree.map(jnp.array, {'ae': ae_params, 'centres': init_centres})
  state = parallel.replicate(train_state.TrainState.create(apply_fn=None, params=params, tx=tx), mesh)
  order = jnp.asarray(np.random.default_rng(seed).permutation(len(x)))
  train_chunk = make_train_chunk(model, method, cfg.alpha, cfg.batch_size, mesh)

  # Labels as a numpy array: host-replicated, which a checkpoint of a multi-process run can hold.
  saved = {'state': state, 'labels': np.asarray(init_labels, np.int32)}
  meta = {'iteration': 0, 'history': [], 'done': False}
  mngr = checkpoint.manager(ckpt_dir) if ckpt_dir else None
  restored = checkpoint.restore_latest(mngr, saved) if mngr else None
  if restored:
    saved, meta = restored
    log.info('%s: resumed from %s at iteration %d', method.name, ckpt_dir, meta['iteration'])
  state, last_labels = saved['state'], np.asarray(saved['labels'])

  t_start, steps_timed, step_seconds = time.perf_counter(), 0, 0.0
  while not meta['done']:
    t0 = time.perf_counter()
    q_dev, _ = predict(state.params, x_dev)
    p_dev = method.target(q_dev)
    labels = np.asarray(hard_labels(q_dev))
    update_seconds = time.perf_counter() - t0
    delta = float(np.mean(labels != last_labels))
    last_labels = labels
    ite = meta['iteration']
    row = {'iteration': ite, 'delta_label': delta, 'update_seconds': update_seconds,
           **metrics.evaluate(y, labels)}
    stop = (ite > 0 and delta < cfg.tol) or ite >= cfg.maxiter
    num_steps = min(cfg.update_interval, cfg.maxiter - ite)
    if not stop:
      t0 = time.perf_counter()
      state, loss = train_chunk(state, x_dev, p_dev, order, ite, num_steps)
      row['loss'] = float(loss)  # the one host sync per chunk
      if not np.isfinite(row['loss']):
        raise UserError(f'{method.name}: loss became non-finite at iteration {ite}; lower '
                        'cluster.learning_rate. No checkpoint was written from this state.')
      row['chunk_seconds'] = time.perf_counter() - t0
      if ite > 0:  # the first chunk includes compilation
        steps_timed, step_seconds = steps_timed + num_steps, step_seconds + row['chunk_seconds']
      meta['iteration'] = ite + num_steps
    meta['history'].append(row)
    meta['done'] = bool(stop)
    scores = ' '.join(f'{k} {row[k]:.4f}' for k in ('acc', 'nmi', 'ari') if k in row)
    eta = format_duration(step_seconds / steps_timed * (cfg.maxiter - ite)) if steps_timed else '?'
    log.info('%s iter %d/%d %s loss %s changed %.4f | max ETA %s%s', method.name, ite, cfg.maxiter, scores,
             f"{row['loss']:.5f}" if 'loss' in row else '-', delta, eta,
             ' | converged' if stop and ite < cfg.maxiter else (' | maxiter' if stop else ''))
    updates = len(meta['history'])
    if mngr and (stop or updates % cfg.checkpoint_every == 0):
      # Keyed by the update count, which grows every pass: the final (stopping) update trains no steps, so
      # keyed by iteration it would collide with the previous save (orbax: StepAlreadyExistsError).
      checkpoint.save(mngr, updates, {'state': state, 'labels': last_labels}, meta)
  if mngr:
    mngr.close()
  q, z = (parallel.to_host(a) for a in predict(state.params, x_dev))
  log.info('%s done: %d iterations in %s', method.name, meta['iteration'],
           format_duration(time.perf_counter() - t_start))
  return ClusteringResult(labels=q.argmax(1).astype(np.int32), q=q, centres=parallel.to_host(state.params['centres']),
                          embedding=z, init_labels=np.asarray(init_labels), iterations=meta['iteration'],
                          history=meta['history'], params=jax.device_get(state.params))

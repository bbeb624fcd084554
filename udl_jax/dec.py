"""The clustering loop every fine-tuning method runs on (DEC, IDEC, DCN, DKM, user losses: `methods.FineTuner`).

  1. Embed the data with the pretrained encoder; k-means (n_init=20) on the embedding gives the centres.
  2. Every `update_interval` steps: Q = method's assignment on the full data, P = method.target(Q), labels =
     argmax Q; stop when fewer than `tol` of the labels changed since the last update (or at `maxiter`).
  3. Between two updates, `update_interval` steps on (encoder [+ decoder], centres) run as one `lax.scan`; a
     method with state (DCN) updates it, and may move the centres, after every step.
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

from udl_jax import augment, checkpoint, clustering, log, metrics, parallel, progress
from udl_jax.errors import UserError
from udl_jax.methods import Batch, FineTuner, student_t
from udl_jax.train import embed, make_optimizer


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


def assignment(method: FineTuner, alpha: float):
  """The method's `assign(z, centres, interval)`, DEC's Student's t with `alpha` when it brings none."""
  return method.assign or student_t(alpha)


# The interval a finished model's assignment is taken at: past every schedule's end (DKM's sharpest alpha).
FINAL_INTERVAL = 2 ** 30


def make_predict(model, assign, mesh):
  """jit(predict((params, interval), x) -> (q, z)) over the full data, each device computing its share of rows."""
  def predict(params_interval, rows):
    params, interval = params_interval
    z = model.apply(params['ae'], rows, method=model.encode)
    return assign(z, params['centres'], interval), z
  return parallel.sharded_map(predict, mesh)


def predict_on_host(model, params, x: np.ndarray, assign, mesh=None,
                    interval: int = FINAL_INTERVAL) -> tuple[np.ndarray, np.ndarray]:
  """(q, z) of a finished model's params ({'ae', 'centres'}) for all of x, as numpy arrays.

  `assign` must be the method's own (`assignment(method, its cluster block's alpha)`), as it trained with.
  """
  mesh = mesh or parallel.make_mesh()
  q, z = make_predict(model, assign, mesh)(parallel.replicate((params, jnp.int32(interval)), mesh),
                                           parallel.replicate(x, mesh))
  return parallel.to_host(q), parallel.to_host(z)


def make_train_chunk(model, method: FineTuner, alpha: float, batch_size: int, update_interval: int, mesh,
                     image_shape: tuple[int, int, int] | None = None, seed: int = 0):
  """jit(chunk((state, method_state), x, p, order, first_step, num_steps) -> ((state, method_state), mean loss)):
  the steps between two target updates, as one `lax.scan`. A method that augments moves each batch as
  `image_shape` images, with a key made from `seed` and the step (a resumed run draws the same moves)."""
  if method.augment and image_shape is None:
    raise UserError(f'{method.name} augments its batches: it needs the image shape of the rows')
  augment_key = jax.random.fold_in(jax.random.key(seed), 3)
  assign = assignment(method, alpha)
  encode = lambda ae, x: model.apply(ae, x, method=model.encode)

  def loss_fn(params, x, p, method_state, idx, interval):
    if method.needs_decoder:
      out = model.apply(params['ae'], x)
      z, recon = out['z'], out['recon']
    else:
      z, recon = encode(params['ae'], x), None
    q = assign(z, params['centres'], interval)
    return method.loss(Batch(x=x, z=z, recon=recon, q=q, p=p, centres=params['centres'], state=method_state,
                             idx=idx, interval=interval))

  grad_fn = jax.value_and_grad(loss_fn)

  def chunk(carry, x, p, order, first_step, num_steps):
    n = x.shape[0]

    def step(carry, s):
      state, method_state = carry
      idx = order[(s * batch_size + jnp.arange(batch_size)) % n]
      rows = x[idx]
      if method.augment:
        moved = augment.random_affine(jax.random.fold_in(augment_key, s), rows.reshape(-1, *image_shape))
        rows = moved.reshape(rows.shape)
      batch = parallel.shard_batch(rows, mesh)
      loss, grads = grad_fn(state.params, batch, parallel.shard_batch(p[idx], mesh), method_state, idx,
                            s // update_interval)
      state = state.apply_gradients(grads=grads)
      if method.update is not None:  # state between steps (DCN): from the batch's new embedding
        method_state, centres = method.update(method_state, state.params['centres'],
                                              encode(state.params['ae'], batch), idx)
        state = state.replace(params={**state.params, 'centres': centres})
      return (state, method_state), loss

    carry, loss = jax.lax.scan(step, carry, first_step + jnp.arange(num_steps))
    return carry, jnp.mean(loss)

  return jax.jit(chunk, static_argnums=5, donate_argnums=0)


def run(model, ae_params, x: np.ndarray, y: np.ndarray | None, n_clusters: int, method: FineTuner, cfg,
        seed: int, ckpt_dir: str | Path | None = None, mesh=None,
        init: tuple[np.ndarray, np.ndarray] | None = None,
        image_shape: tuple[int, int, int] | None = None) -> ClusteringResult:
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
  predict = make_predict(model, assignment(method, cfg.alpha), mesh)
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
  train_chunk = make_train_chunk(model, method, cfg.alpha, cfg.batch_size, cfg.update_interval, mesh,
                                 image_shape, seed)

  # Labels as a numpy array: host-replicated, which a checkpoint of a multi-process run can hold. The method's
  # state only when it has one (checkpoints of stateless methods keep their old layout).
  method_state = parallel.replicate(method.init_state(init_labels, init_centres), mesh)
  saved = {'state': state, 'labels': np.asarray(init_labels, np.int32)}
  if jax.tree.leaves(method_state):
    saved['method_state'] = method_state
  meta = {'iteration': 0, 'history': [], 'done': False}
  mngr = checkpoint.manager(ckpt_dir) if ckpt_dir else None
  restored = checkpoint.restore_latest(mngr, saved) if mngr else None
  if restored:
    saved, meta = restored
    log.info('%s: resumed from %s at iteration %d', method.name, ckpt_dir, meta['iteration'])
  state, last_labels = saved['state'], np.asarray(saved['labels'])
  method_state = saved.get('method_state', method_state)

  t_start, steps_timed, step_seconds = time.perf_counter(), 0, 0.0
  progress.start_phase(method.name, cfg.maxiter, 'iter', bound=True)
  while not meta['done']:
    t0 = time.perf_counter()
    interval = len(meta['history'])
    q_dev, _ = predict((state.params, jnp.int32(interval)), x_dev)
    p_dev = q_dev if method.target is None else method.target(q_dev)  # (unused without a target)
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
      (state, method_state), loss = train_chunk((state, method_state), x_dev, p_dev, order, ite, num_steps)
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
    eta = progress.format_duration(step_seconds / steps_timed * (cfg.maxiter - ite)) if steps_timed else '?'
    log.detail('%s iter %d/%d %s loss %s changed %.4f | ETA <= %s%s', method.name, ite, cfg.maxiter, scores,
               f"{row['loss']:.5f}" if 'loss' in row else '-', delta, eta,
               ' | converged' if stop and ite < cfg.maxiter else (' | maxiter' if stop else ''))
    progress.advance(meta['iteration'])
    updates = len(meta['history'])
    if mngr and (stop or updates % cfg.checkpoint_every == 0):
      # Keyed by the update count, which grows every pass: the final (stopping) update trains no steps, so
      # keyed by iteration it would collide with the previous save (orbax: StepAlreadyExistsError).
      checkpoint.save(mngr, updates, {'state': state, 'labels': last_labels, **(
          {'method_state': method_state} if 'method_state' in saved else {})}, meta)
  if mngr:
    mngr.close()
  q, z = (parallel.to_host(a) for a in predict((state.params, jnp.int32(len(meta['history']) - 1)), x_dev))
  progress.end_phase()
  log.info('%s done: %d iterations in %s', method.name, meta['iteration'],
           progress.format_duration(time.perf_counter() - t_start))
  return ClusteringResult(labels=q.argmax(1).astype(np.int32), q=q, centres=parallel.to_host(state.params['centres']),
                          embedding=z, init_labels=np.asarray(init_labels), iterations=meta['iteration'],
                          history=meta['history'], params=jax.device_get(state.params))

"""The clustering loop every fine-tuning method runs on (DEC, IDEC, DCN, DKM, user losses: `methods.FineTuner`).

  1. Embed the data with the pretrained encoder; k-means (n_init=20) on the embedding gives the centres.
  2. Every `update_interval` steps: Q = method's assignment on the full data, P = method.target(Q), labels =
     argmax Q; stop when fewer than `tol` of the labels changed since the last update (or at `maxiter`).
  3. Between two updates, `update_interval` steps on (encoder [+ decoder], centres) run as one `lax.scan`; a
     method with state (DCN) updates it, and may move the centres, after every step. (Convolutions on the CPU:
     one jitted step per call, `_train_steps`.)
Batches walk through one fixed seeded permutation of the data, wrapping around (or, with
`cluster.batch_order='in_order'`, through the data in its own order as DEC-keras does), so a run resumed from a
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

from udl_jax import augment, checkpoint, clustering, log, metrics, parallel, progress, seed_batch
from udl_jax.errors import Diverged, UserError
from udl_jax.methods import Batch, FineTuner, student_t
from udl_jax.train import embed, epoch_as_scan, make_optimizer, partial_batch_size


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
  diverged_at: int | None = None  # the iteration whose chunk made the loss non-finite: the rest is meaningless


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


def _chunk(model, method: FineTuner, alpha: float, batch_size: int, update_interval: int, mesh,
           image_shape: tuple[int, int, int] | None, in_order: bool = False):
  """chunk(carry, x, rows, p, order, augment_key, first_step, num_steps) -> (carry, mean loss), unjitted.

  `order` is a permutation of the n rows being clustered; `rows` their indices in x (x itself when None). Step s
  trains on the batch_size rows of `order` from s * batch_size on, wrapping around; `in_order` walks as DEC-keras
  does instead: the full batches, then the rows left over as a smaller batch, then from the start again."""
  if method.augment and image_shape is None:
    raise UserError(f'{method.name} augments its batches: it needs the image shape of the rows')
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

  def chunk(carry, x, rows, p, order, augment_key, first_step, num_steps):
    n = order.shape[0]
    full, partial = n // batch_size, partial_batch_size(n, batch_size, mesh) if in_order else 0

    def step(carry, s):
      if not partial:
        return train_on(carry, order[(s * batch_size + jnp.arange(batch_size)) % n], s)
      b = s % (full + 1)
      return jax.lax.cond(b < full, lambda c: train_on(c, order[b * batch_size + jnp.arange(batch_size)], s),
                          lambda c: train_on(c, order[full * batch_size + jnp.arange(partial)], s), carry)

    def train_on(carry, idx, s):
      state, method_state = carry
      batch_rows = x[idx] if rows is None else x[rows[idx]]
      if method.augment:
        moved = augment.random_affine(jax.random.fold_in(augment_key, s), batch_rows.reshape(-1, *image_shape))
        batch_rows = moved.reshape(batch_rows.shape)
      batch = parallel.shard_batch(batch_rows, mesh)
      loss, grads = grad_fn(state.params, batch, parallel.shard_batch(p[idx], mesh), method_state, idx,
                            s // update_interval)
      state = state.apply_gradients(grads=grads)
      if method.update is not None:  # state between steps (DCN): from the batch's new embedding
        method_state, centres = method.update(method_state, state.params['centres'],
                                              encode(state.params['ae'], batch), idx)
        state = state.replace(params={**state.params, 'centres': centres})
      return (state, method_state), loss

    if num_steps == 1:  # `_train_steps`' one call per step: no loop at all (see there)
      return step(carry, first_step)
    carry, loss = jax.lax.scan(step, carry, first_step + jnp.arange(num_steps))
    return carry, jnp.mean(loss)
  return chunk


def _augment_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), 3)


def make_train_chunk(model, method: FineTuner, alpha: float, batch_size: int, update_interval: int, mesh,
                     image_shape: tuple[int, int, int] | None = None, seed: int = 0, in_order: bool = False):
  """jit(chunk((state, method_state), x, p, order, first_step, num_steps) -> ((state, method_state), mean loss)):
  the steps between two target updates, as one `lax.scan`. A method that augments moves each batch as
  `image_shape` images, with a key made from `seed` and the step (a resumed run draws the same moves)."""
  chunk = _chunk(model, method, alpha, batch_size, update_interval, mesh, image_shape, in_order)
  key = _augment_key(seed)
  return jax.jit(lambda carry, x, p, order, first_step, num_steps: chunk(carry, x, None, p, order, key, first_step,
                                                                         num_steps),
                 static_argnums=5, donate_argnums=0)


def make_seeds_chunk(model, method: FineTuner, alpha: float, batch_size: int, update_interval: int, mesh,
                     num_seeds: int, image_shape: tuple[int, int, int] | None = None, in_order: bool = False):
  """jit(chunk(carries, x, rows, p, orders, augment_keys, active, first_step, num_steps)): `make_train_chunk`
  for S seeds as one program (`udl_jax.seed_batch`); x is shared, the rest has a leading seed axis, and the
  seeds not `active` keep their state. The carries are donated."""
  chunk = seed_batch.over_seeds(_chunk(model, method, alpha, batch_size, update_interval, mesh, image_shape, in_order),
                                num_seeds, (0, None, 0, 0, 0, 0, None, None))

  def seeds_chunk(carries, x, rows, p, orders, augment_keys, active, first_step, num_steps):
    new, loss = chunk(carries, x, rows, p, orders, augment_keys, first_step, num_steps)
    return seed_batch.keep_inactive(active, new, carries), loss
  return jax.jit(seeds_chunk, static_argnums=8, donate_argnums=0)


def _train_steps(train_chunk, scan: bool, carries, args: tuple, first_step: int, num_steps: int):
  """The steps between two target updates: one chunk, or for convolutions on the CPU (`scan` False) one call per
  step, as the pretraining's looped epoch does (`train.make_train_epoch`: XLA:CPU's convolution gradients are
  slow inside a loop body). A one-step chunk has no loop at all: even a one-step `lax.scan`, which XLA unrolls,
  keeps the loop body's convolution layouts, and DCEC's step on digits took twice as long. Same steps, same
  batches."""
  if scan:
    return train_chunk(carries, *args, first_step, num_steps)
  losses = []
  for step in range(first_step, first_step + num_steps):
    carries, loss = train_chunk(carries, *args, step, 1)
    losses.append(loss)
  return carries, jnp.mean(jnp.stack(losses), axis=0)


def run(model, ae_params, x: np.ndarray, y: np.ndarray | None, n_clusters: int, method: FineTuner, cfg,
        seed: int, ckpt_dir: str | Path | None = None, mesh=None,
        init: tuple[np.ndarray, np.ndarray] | None = None,
        image_shape: tuple[int, int, int] | None = None) -> ClusteringResult:
  """Clusters model-ready data `x` with `method`, starting from the autoencoder `ae_params`.

  `cfg` is the method's resolved `cluster` block (`config.method_cluster_block`: alpha, batch_size, optimizer,
  learning_rate, momentum, update_interval, tol, maxiter, kmeans_n_init, checkpoint_every). `init` = (labels,
  centres) of a k-means already run on this embedding (the benchmark shares it with AE+KMeans); computed here
  when None. `run_seeds` with one seed.
  """
  result = run_seeds(model, [ae_params], x, None, y, n_clusters, method, cfg, [seed],
                     None if ckpt_dir is None else [ckpt_dir], mesh, None if init is None else [init], image_shape)[0]
  if result.diverged_at is not None:
    raise Diverged(divergence_message(method.name, result.diverged_at, seed), result.diverged_at)
  return result


def divergence_message(method_name: str, iteration: int, seed: int) -> str:
  return (f'{method_name}: loss became non-finite in the steps from iteration {iteration} of seed {seed} (lower '
          'cluster.learning_rate); nothing was saved from this state')


def run_seeds(model, ae_params: list, x: np.ndarray, rows: list[np.ndarray] | None, y: np.ndarray | None,
              n_clusters: int, method: FineTuner, cfg, seed_ids: list[int], ckpt_dirs: list | None = None,
              mesh=None, inits: list[tuple[np.ndarray, np.ndarray]] | None = None,
              image_shape: tuple[int, int, int] | None = None) -> list[ClusteringResult]:
  """`run` for several seeds at once, as one program (`udl_jax.seed_batch`): a ClusteringResult per seed.

  Seed i clusters x[rows[i]] (all of x when rows is None; y holds x's labels) from ae_params[i] and inits[i],
  with its own permutation, target updates, stopping point and checkpoints (ckpt_dirs[i]); a seed that met
  `tol` keeps its state while the others go on, so its result equals a run of it alone. So does a seed whose
  loss became non-finite: it stops there (its result's `diverged_at`, nothing saved from that state), the
  others go on. The times in each seed's history are its share of the batch's.
  """
  mesh = mesh or parallel.make_mesh()
  num_seeds = len(seed_ids)
  parallel.check_batch_size(cfg.batch_size, mesh)
  rows = [np.arange(len(x))] * num_seeds if rows is None else rows
  n = len(rows[0])
  if any(len(r) != n for r in rows):
    raise ValueError('the seeds of a batch need the same number of rows to cluster')
  if n < cfg.batch_size:
    raise UserError(f'batch_size {cfg.batch_size} is larger than the {n} samples to cluster')
  x_dev = parallel.replicate(x, mesh)
  rows_dev = parallel.replicate(np.stack(rows).astype(np.int32), mesh)
  one_predict = make_predict(model, assignment(method, cfg.alpha), mesh)
  predict = jax.jit(seed_batch.over_seeds(lambda params, interval, x, rows: one_predict((params, interval), x[rows]),
                                          num_seeds, (0, 0, None, 0)))
  target = jax.jit(seed_batch.over_seeds(method.target or (lambda q: q), num_seeds, (0,)))
  # Host copies of the labels: replicated, so that every process can read them.
  hard_labels = jax.jit(lambda q: jnp.argmax(q, axis=-1).astype(jnp.int32), out_shardings=parallel.replicated(mesh))
  if inits is None:
    inits = []
    for params, seed, r in zip(ae_params, seed_ids, rows):
      z = embed(model, params, x[r], mesh)
      inits.append(parallel.computed_on_main(
          lambda: clustering.kmeans(z, n_clusters, seed, cfg.kmeans_n_init),
          (np.zeros(n, np.int32), np.zeros((n_clusters, z.shape[1]), np.float32))))
  tx = make_optimizer(cfg)
  in_order = cfg.get('batch_order', 'shuffled') == 'in_order'
  scan = epoch_as_scan(model)
  train_chunk = make_seeds_chunk(model, method, cfg.alpha, cfg.batch_size, cfg.update_interval, mesh, num_seeds,
                                 image_shape, in_order)
  orders = jnp.asarray(np.stack([np.arange(n) if in_order else np.random.default_rng(seed).permutation(n)
                                 for seed in seed_ids]))
  augment_keys = jnp.stack([_augment_key(seed) for seed in seed_ids])
  y_rows = [None if y is None else y[r] for r in rows]  # each seed's labels, for its scores

  states, method_states, last_labels, metas = [], [], [], []
  mngrs = [checkpoint.manager(d) for d in ckpt_dirs] if ckpt_dirs else [None] * num_seeds
  for i, mngr in enumerate(mngrs):
    init_labels, init_centres = inits[i]
    # A copy: the training chunks donate their state, and the caller's autoencoder params must survive.
    params = jax.tree.map(jnp.array, {'ae': ae_params[i], 'centres': init_centres})
    state = parallel.replicate(train_state.TrainState.create(apply_fn=None, params=params, tx=tx), mesh)
    # Labels as a numpy array: host-replicated, which a checkpoint of a multi-process run can hold. The
    # method's state only when it has one (checkpoints of stateless methods keep their old layout).
    method_state = parallel.replicate(method.init_state(init_labels, init_centres), mesh)
    saved = {'state': state, 'labels': np.asarray(init_labels, np.int32)}
    if jax.tree.leaves(method_state):
      saved['method_state'] = method_state
    meta = {'iteration': 0, 'history': [], 'done': False}
    restored = checkpoint.restore_latest(mngr, saved) if mngr else None
    if restored:
      saved, meta = restored
      log.info('%s: resumed from %s at iteration %d', method.name, ckpt_dirs[i], meta['iteration'])
    states.append(saved['state'])
    method_states.append(saved.get('method_state', method_state))
    last_labels.append(np.asarray(saved['labels']))
    metas.append(meta)
  has_method_state = bool(jax.tree.leaves(method_states[0]))
  carries = parallel.replicate((seed_batch.stack(states), seed_batch.stack(method_states)), mesh)

  t_start, steps_timed, step_seconds = time.perf_counter(), 0, 0.0
  label = method.name + (f' ({num_seeds} seeds)' if num_seeds > 1 else '')
  progress.start_phase(label, cfg.maxiter, 'iter', bound=True)
  while True:
    live = [i for i, m in enumerate(metas) if not m['done']]
    if not live:
      break
    # Seeds resumed from a later update than the others wait for them: every update trains the same steps.
    updates = min(len(metas[i]['history']) for i in live)
    due = [i for i in live if len(metas[i]['history']) == updates]
    ite = metas[due[0]]['iteration']
    t0 = time.perf_counter()
    q_dev, _ = predict(carries[0].params, jnp.full(num_seeds, updates, jnp.int32), x_dev, rows_dev)
    p_dev = target(q_dev)  # (unused without a target)
    labels = np.asarray(hard_labels(q_dev))
    update_seconds = (time.perf_counter() - t0) / len(due)
    num_steps = min(cfg.update_interval, cfg.maxiter - ite)
    history_rows, training = {}, []
    for i in due:
      delta = float(np.mean(labels[i] != last_labels[i]))
      last_labels[i] = labels[i]
      history_rows[i] = {'iteration': ite, 'delta_label': delta, 'update_seconds': update_seconds,
                         **metrics.evaluate(y_rows[i], labels[i])}
      if not ((ite > 0 and delta < cfg.tol) or ite >= cfg.maxiter):
        training.append(i)
    if training:
      t0 = time.perf_counter()
      active = jnp.asarray([i in training for i in range(num_seeds)])
      carries, loss = _train_steps(train_chunk, scan, carries, (x_dev, rows_dev, p_dev, orders, augment_keys, active),
                                   ite, num_steps)
      loss = np.asarray(loss)  # the one host sync per chunk
      chunk_seconds = (time.perf_counter() - t0) / len(training)
      for i in training:
        if not np.isfinite(loss[i]):
          log.info('%s: this seed stops here, recorded as diverged', divergence_message(method.name, ite, seed_ids[i]))
          history_rows[i].update(diverged=True, chunk_seconds=chunk_seconds)
          metas[i]['diverged_at'] = ite
          continue
        history_rows[i].update(loss=float(loss[i]), chunk_seconds=chunk_seconds)
        metas[i]['iteration'] = ite + num_steps
      if ite > 0:  # the first chunk includes compilation
        steps_timed, step_seconds = steps_timed + num_steps, step_seconds + chunk_seconds * len(training)
    eta = progress.format_duration(step_seconds / steps_timed * (cfg.maxiter - ite)) if steps_timed else '?'
    for i in due:
      row, meta = history_rows[i], metas[i]
      diverged = 'diverged_at' in meta
      stop = i not in training or diverged
      meta['history'].append(row)
      meta['done'] = stop
      if diverged:
        continue  # its state is not finite: nothing to log as progress or to save
      scores = ' '.join(f'{k} {row[k]:.4f}' for k in ('acc', 'nmi', 'ari') if k in row)
      log.detail('%s seed %d iter %d/%d %s loss %s changed %.4f | ETA <= %s%s', method.name, seed_ids[i], ite,
                 cfg.maxiter, scores, f"{row['loss']:.5f}" if 'loss' in row else '-', row['delta_label'], eta,
                 ' | converged' if stop and ite < cfg.maxiter else (' | maxiter' if stop else ''))
      if mngrs[i] and (stop or len(meta['history']) % cfg.checkpoint_every == 0):
        # Keyed by the update count, which grows every pass: the final (stopping) update trains no steps, so
        # keyed by iteration it would collide with the previous save (orbax: StepAlreadyExistsError).
        state, method_state = seed_batch.take(carries, i)
        checkpoint.save(mngrs[i], len(meta['history']), {'state': state, 'labels': last_labels[i], **(
            {'method_state': method_state} if has_method_state else {})}, meta)
    progress.advance(max(metas[i]['iteration'] for i in due))
  for mngr in filter(None, mngrs):
    mngr.close()
  intervals = jnp.asarray([len(m['history']) - 1 for m in metas], jnp.int32)
  q_all, z_all = (parallel.to_host(a) for a in predict(carries[0].params, intervals, x_dev, rows_dev))
  progress.end_phase()
  log.info('%s done: %s iterations in %s', label, ', '.join(str(m['iteration']) for m in metas),
           progress.format_duration(time.perf_counter() - t_start))
  params = jax.device_get(carries[0].params)
  return [ClusteringResult(labels=q_all[i].argmax(1).astype(np.int32), q=q_all[i],
                           centres=params['centres'][i], embedding=z_all[i], init_labels=np.asarray(inits[i][0]),
                           iterations=metas[i]['iteration'], history=metas[i]['history'],
                           params=seed_batch.take(params, i), diverged_at=metas[i].get('diverged_at'))
          for i in range(num_seeds)]

"""The benchmark: raw KMeans, AE+KMeans and the clustering methods (DEC, IDEC, ...) over seeds, as a table.

Workdir layout (re-running the same command resumes: finished trials are skipped, the unfinished one continues
from its last checkpoint; a requested method whose clustering settings changed is redone from the saved
autoencoders):
  config.json  trials.csv  summary.json  table.md  clusters.png  log.txt
  seed_S/trials.csv     the finished trials of seed S: the record (the top-level trials.csv is their union)
  seed_S/methods.json   the clustering settings each method's trial was made with
  seed_S/ae/            autoencoder checkpoints, metrics.jsonl, params (final: a finished pretraining)
  seed_S/ae_kmeans.npz  k-means on the embedding (labels, centres): AE+KMeans and the start of every method
  seed_S/METHOD/        checkpoints, metrics.jsonl, params (final); seed_S/METHOD_labels.npz (eval labels)

Processes may share a workdir (`udl_jax.records`: one process per seed at a time, merged records), and a seed
folder copied from another workdir of the same config joins its table. Each process rewrites the table from
every seed folder when it finishes. Several processes of one job (`--config.distributed`) act as one.
"""

from __future__ import annotations

import contextlib
import time
import zipfile
from pathlib import Path

import jax
import numpy as np

from udl_jax import (checkpoint, clustering, config as udl_config, data, dec, log, methods, metrics, models,
                     parallel, plots, records, results, train)
from udl_jax.errors import UserError


def protocol_split(n: int, config, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(fit indices, evaluation indices): all/all for transductive, a seeded split for holdout."""
  if config.protocol == 'transductive':
    everything = np.arange(n)
    return everything, everything
  return train.split_train_val(n, config.holdout_fraction, seed)


def nearest_centre(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
  return np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1).astype(np.int32)


class SeedRun:
  """The shared pieces of one seed (pretrained autoencoder, its k-means) computed once and cached on disk."""

  def __init__(self, config, dataset: data.Dataset, seed: int, workdir: Path, mesh):
    self.config, self.dataset, self.seed, self.mesh = config, dataset, seed, mesh
    self.dir = workdir / f'seed_{seed}'
    self.fit_idx, self.eval_idx = protocol_split(len(dataset), config, seed)
    self.x = models.model_input(config.model.name, dataset.x)
    self.model = models.from_config(config, dataset.image_shape)
    self.n_clusters = config.n_clusters or dataset.num_classes
    self._ae = self._kmeans = self._z_fit = None

  def _finished_autoencoder(self) -> tuple[dict, float] | None:
    """The saved final params and pretraining seconds of a finished pretraining, or None."""
    ae_dir = self.dir / 'ae'
    done = lambda: np.asarray((ae_dir / 'params').exists() and (ae_dir / 'metrics.jsonl').exists())
    if not parallel.computed_on_main(done, np.asarray(False)):
      return None
    try:
      params = checkpoint.load_tree(ae_dir / 'params')
      seconds = sum(h['seconds'] for h in results.read_jsonl(ae_dir / 'metrics.jsonl'))
    except (UserError, ValueError, KeyError) as e:
      log.info('seed %d: the finished autoencoder in %s is unreadable (%s); resuming its training instead',
               self.seed, ae_dir, e)
      return None
    return params, float(seconds)

  def autoencoder(self) -> tuple[dict, float]:
    """(params, pretraining seconds), training or resuming as needed."""
    if self._ae is None:
      self._ae = self._finished_autoencoder()
    if self._ae is None:
      cfg = self.config.pretrain
      x_fit = self.x[self.fit_idx]
      tr, va = train.split_train_val(len(x_fit), cfg.val_fraction, self.seed)
      state, history = train.fit(self.config.model.name, self.model, self.config.model, cfg, x_fit[tr],
                                 x_fit[va] if len(va) else None, self.seed, self.dir / 'ae' / 'checkpoints',
                                 self.mesh)
      params = jax.device_get(state.params)
      checkpoint.save_tree(self.dir / 'ae' / 'params', params)
      results.write_jsonl(self.dir / 'ae' / 'metrics.jsonl', history)  # last: it marks pretraining finished
      self._ae = params, float(sum(h['seconds'] for h in history))
    return self._ae

  def _saved_kmeans(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
      with np.load(path) as saved:
        return saved['labels'], saved['centres']
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      log.info('seed %d: %s is unreadable (%s: %s); computing the k-means again', self.seed, path,
               type(e).__name__, e)
      return None

  def fit_embedding(self) -> np.ndarray:
    """The pretrained encoder's output for the fit rows, computed once per seed."""
    if self._z_fit is None:
      self._z_fit = train.embed(self.model, self.autoencoder()[0], self.x[self.fit_idx], self.mesh)
    return self._z_fit

  def ae_kmeans(self) -> tuple[np.ndarray, np.ndarray]:
    """k-means (n_init from the config) on the embedding of the fit set: (labels, centres), cached.

    Process 0 computes it (or reads the cache) and broadcasts it: every process starts DEC from the same centres.
    """
    if self._kmeans is None:
      self._kmeans = self._compute_ae_kmeans()
    return self._kmeans

  def _compute_ae_kmeans(self) -> tuple[np.ndarray, np.ndarray]:
    path = self.dir / 'ae_kmeans.npz'
    params, _ = self.autoencoder()
    dim = jax.eval_shape(lambda: self.model.apply(params, self.x[:1], method=self.model.encode)).shape[-1]
    like = (np.zeros(len(self.fit_idx), np.int32), np.zeros((self.n_clusters, dim), np.float32))

    def read_cache():
      saved = self._saved_kmeans(path) if path.exists() else None
      return (np.asarray(saved is not None), *(saved or like))

    found, labels, centres = parallel.computed_on_main(read_cache, (np.asarray(False), *like))
    if found:
      return labels, centres
    z = self.fit_embedding()
    labels, centres = parallel.computed_on_main(
        lambda: clustering.kmeans(z, self.n_clusters, self.seed, self.config.cluster.kmeans_n_init), like)
    results.write_npz(path, labels=labels, centres=centres)
    return labels, centres

  def score(self, eval_labels: np.ndarray) -> dict:
    y = self.dataset.y
    return metrics.evaluate(None if y is None else y[self.eval_idx], eval_labels)


def run_trial(run: SeedRun, method: str) -> tuple[dict, np.ndarray, np.ndarray | None]:
  """(trial row, labels of the evaluation set, confidence or None) of one method on one seed."""
  config, holdout = run.config, run.config.protocol == 'holdout'
  t0 = time.perf_counter()
  row = {'seed': run.seed, 'method': method, 'protocol': config.protocol, 'pretrain_seconds': None,
         'iterations': None}
  confidence = None
  if method == 'kmeans':
    flat = run.dataset.flat
    like = (np.zeros(len(run.fit_idx), np.int32), np.zeros((run.n_clusters, flat.shape[1]), np.float32))
    labels, centres = parallel.computed_on_main(
        lambda: clustering.kmeans(flat[run.fit_idx], run.n_clusters, run.seed, config.cluster.kmeans_n_init), like)
    eval_labels = nearest_centre(flat[run.eval_idx], centres) if holdout else labels
  elif method == 'ae_kmeans':
    params, row['pretrain_seconds'] = run.autoencoder()
    t0 = time.perf_counter()
    labels, centres = run.ae_kmeans()
    eval_labels = nearest_centre(train.embed(run.model, params, run.x[run.eval_idx], run.mesh), centres) \
        if holdout else labels
  else:
    params, row['pretrain_seconds'] = run.autoencoder()
    method_obj = methods.get(method, **udl_config.method_kwargs(config.cluster, method))
    kind = {methods.EmbeddingClusterer: _embedding_trial, methods.FineTuner: _fine_tuning_trial,
            methods.OwnTrainer: _own_training_trial}[type(method_obj)]
    t0 = time.perf_counter()
    q, extra = kind(run, method_obj, params)
    row.update(extra)
    eval_labels = q.argmax(1).astype(np.int32)
    confidence = q.max(1)
  row.setdefault('seconds', time.perf_counter() - t0)
  row.update(run.score(eval_labels))
  results.write_npz(run.dir / f'{method}_labels.npz', labels=eval_labels, index=run.eval_idx,
                    **({} if confidence is None else {'confidence': confidence}))
  return row, eval_labels, confidence


def _soft(labels: np.ndarray, q: np.ndarray | None, n_clusters: int) -> np.ndarray:
  """A method's soft assignments, or one-hot rows of its labels when it has none."""
  return q if q is not None else np.eye(n_clusters, dtype=np.float32)[labels]


def _embedding_trial(run: SeedRun, method: methods.EmbeddingClusterer, params) -> tuple[np.ndarray, dict]:
  """Soft assignments of the evaluation rows from a clusterer fitted (on process 0) to the fit rows' embedding."""
  z_fit = run.fit_embedding()
  z_eval = z_fit if run.config.protocol == 'transductive' else \
      train.embed(run.model, params, run.x[run.eval_idx], run.mesh)

  def fit_and_predict():
    labels, q = method.fit(z_fit, run.n_clusters, run.seed, run.config.cluster.kmeans_n_init)(z_eval)
    return _soft(labels, q, run.n_clusters)
  q = parallel.computed_on_main(fit_and_predict, np.zeros((len(z_eval), run.n_clusters), np.float32))
  return q, {}


def _fine_tuning_trial(run: SeedRun, method: methods.FineTuner, params) -> tuple[np.ndarray, dict]:
  """The shared clustering loop from the seed's k-means start; saves the method's model for `assign`."""
  init = run.ae_kmeans()
  y_fit = None if run.dataset.y is None else run.dataset.y[run.fit_idx]
  cluster_cfg = udl_config.method_cluster_block(run.config.cluster, method.name)
  result = dec.run(run.model, params, run.x[run.fit_idx], y_fit, run.n_clusters, method, cluster_cfg, run.seed,
                   run.dir / method.name / 'checkpoints', run.mesh, init=init)
  results.write_jsonl(run.dir / method.name / 'metrics.jsonl', result.history)
  checkpoint.save_tree(run.dir / method.name / 'params', result.params)
  q = dec.predict_on_host(run.model, result.params, run.x[run.eval_idx], dec.assignment(method, cluster_cfg.alpha),
                          run.mesh)[0] if run.config.protocol == 'holdout' else result.q
  # Compute time of the whole clustering phase, also when this process resumed it half-way.
  seconds = sum(h['update_seconds'] + h.get('chunk_seconds', 0.0) for h in result.history)
  return q, {'iterations': result.iterations, 'seconds': seconds}


def _own_training_trial(run: SeedRun, method: methods.OwnTrainer, params) -> tuple[np.ndarray, dict]:
  """A method with its own model: it gets the seed's data, autoencoder, k-means start and its settings."""
  seed = methods.Seed(model=run.model, ae_params=params, x=run.x[run.fit_idx],
                      y=None if run.dataset.y is None else run.dataset.y[run.fit_idx], n_clusters=run.n_clusters,
                      init=run.ae_kmeans(), seed=run.seed,
                      config=udl_config.method_cluster_block(run.config.cluster, method.name),
                      workdir=run.dir / method.name, mesh=run.mesh)
  labels, q, history = method.run(seed)
  results.write_jsonl(run.dir / method.name / 'metrics.jsonl', history)
  return _soft(labels, q, run.n_clusters), {}


def write_outputs(config, dataset: data.Dataset, workdir: Path, rows: list[dict], wall_seconds: float) -> dict:
  method_names = udl_config.method_list(config)
  summary = results.summarize(rows, method_names)
  results.write_trials(workdir / 'trials.csv', rows)
  payload = {'dataset': config.dataset, 'protocol': config.protocol, 'n_samples': len(dataset),
             'seeds': sorted({r['seed'] for r in rows}), 'methods': summary, 'wall_seconds_this_process':
             wall_seconds, 'config': config.to_dict(), 'environment': results.environment()}
  results.write_json(workdir / 'summary.json', payload)
  n_seeds = len(payload['seeds'])
  header = (f'{config.dataset} ({len(dataset)} images), protocol {config.protocol}, '
            f"{n_seeds} seed{'s' if n_seeds != 1 else ''}\n\n")
  results.write_atomic(workdir / 'table.md', header + results.markdown_table(summary))
  _cluster_figure(dataset, workdir, rows)
  return payload


def _cluster_figure(dataset: data.Dataset, workdir: Path, rows: list[dict]) -> None:
  """Sample images per cluster for the best run of the first deep method that has one (by ACC, else any)."""
  for method in ('dec', 'idec', 'ae_kmeans', 'kmeans'):
    mine = [r for r in rows if r['method'] == method]
    if mine:
      best = max(mine, key=lambda r: r.get('acc') or 0.0)
      saved = np.load(workdir / f"seed_{best['seed']}" / f'{method}_labels.npz')
      acc = f", ACC {best['acc']:.3f}" if best.get('acc') is not None else ''
      plots.cluster_grid(dataset.x[saved['index']], saved['labels'], workdir / 'clusters.png',
                         title=f"{results.METHOD_LABELS.get(method, method)}, seed {best['seed']}{acc}",
                         confidence=saved['confidence'] if 'confidence' in saved else None)
      return


# What may change between two runs in one workdir: which trials to run, when to save, and the clustering
# settings of the methods (their trials are redone). k-means' n_init decides AE+KMeans and every method's start.
def _may_change(config) -> tuple[str, ...]:
  cluster = tuple(f'cluster.{k}' for k in config.cluster if k != 'kmeans_n_init')
  return records.SELECTION_KEYS + ('distributed', 'pretrain.checkpoint_every') + cluster


def _prepare_workdir(config, workdir: Path, dataset: data.Dataset) -> list[dict]:
  """Checks that `config` may run in `workdir` and records it there; returns the finished trials.

  Every process reads the workdir before process 0 changes anything in it (the barrier), so all agree.
  """
  finished, before = records.read_all(workdir), records.saved_config(workdir)
  start_over = records.check_resumable(workdir, before, config, _may_change(config), 'seeds, methods, imports '
                                       'and the clustering settings of the methods', has_finished_work=bool(finished))
  legacy_cluster = {**udl_config.LEGACY_CLUSTER_DEFAULTS, **(before or {}).get('cluster', {})}
  parallel.barrier('read the workdir')
  if not parallel.is_main_process():
    return finished
  with records.workdir_lock(workdir):
    records.remove_stale_temporaries(workdir)
    if start_over:
      records.discard_unfinished(workdir)
    # Seeds recorded before methods.json: their trials were made with the saved config's cluster block.
    for seed in {r['seed'] for r in finished}:
      records.record_legacy_settings(workdir / f'seed_{seed}', legacy_cluster)
    results.write_json(workdir / 'config.json', config.to_dict())
    results.write_json(workdir / 'image_shape.json', list(dataset.image_shape))  # what `assign` must match
  return finished


def _methods_to_run(config, workdir: Path, seed: int, method_names: list[str]) -> tuple[list[str], int]:
  """(The requested methods seed still needs, how many of them were finished but are redone because their
  clustering settings changed). Decided by process 0 (holding the seed's lock) and broadcast, so every process
  runs the same trials."""
  def decide():
    stale = records.stale_methods(workdir, seed, method_names, config.cluster.to_dict())
    if stale:
      log.info('seed %d: clustering settings of %s changed: those trials are redone from the saved '
               'autoencoder', seed, ', '.join(stale))
      records.forget_trials(workdir, seed, stale)
    done = {r['method'] for r in records.read_seed(workdir, seed)}
    return np.asarray([m not in done for m in method_names] + [len(stale)])
  decided = parallel.computed_on_main(decide, np.zeros(len(method_names) + 1, np.int64))
  return [m for m, wanted in zip(method_names, decided) if wanted], int(decided[-1])


def _span(seeds: list[int]) -> str:
  return f'{seeds[0]}..{seeds[-1]}' if len(seeds) > 1 else str(seeds[0])


def run(config, workdir: str | Path) -> dict:
  """Runs (or resumes) every seed x method trial of `config` in `workdir`; returns the summary.

  Several processes may share a workdir: each seed is worked on by one at a time (its lock), and the records
  merge. In a multi-process (multi-host) run, process 0 does every file write and takes the locks.
  """
  methods.import_plugins(config.get('imports', ''))
  udl_config.validate(config)
  if config.distributed:
    parallel.initialize_distributed()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  dataset = data.from_config(config)
  mesh = parallel.make_mesh()
  udl_config.validate_for_data(config, dataset, mesh)
  finished = _prepare_workdir(config, workdir, dataset)
  main = parallel.is_main_process()
  method_names = udl_config.method_list(config)
  seeds = list(range(config.first_seed, config.first_seed + config.seeds))
  wanted = {(s, m) for s in seeds for m in method_names}
  done = len({(r['seed'], r['method']) for r in finished} & wanted)
  t_start = time.perf_counter()
  log.info('benchmark %s: %d images, seeds %s x %s, protocol %s, %d of %d trials already done', config.dataset,
           len(dataset), _span(seeds), ','.join(method_names), config.protocol, done, len(wanted))
  for seed in seeds:
    with records.seed_lock(workdir, seed) if main else contextlib.nullcontext():
      if main:
        records.remove_stale_temporaries(workdir / f'seed_{seed}', recursive=True)
      todo, redone = _methods_to_run(config, workdir, seed, method_names)
      done -= redone
      seed_run = SeedRun(config, dataset, seed, workdir, mesh)
      for method in todo:
        row, _, _ = run_trial(seed_run, method)
        settings = None if method in methods.BASELINES else \
            udl_config.method_settings(config.cluster.to_dict(), method)
        if main:
          records.add_trial(workdir, row, settings)
        done += 1
        scores = ' '.join(f'{k} {row[k]:.3f}' for k in results.METRICS if k in row)
        log.info('trial %d/%d seed %d %s: %s (%.1f s)', done, len(wanted), seed, method, scores, row['seconds'])
    if main and todo:
      records.write_union(workdir)
  parallel.barrier('trials done')
  # Re-read: processes running other seeds in this workdir may have finished trials meanwhile.
  payload = write_outputs(config, dataset, workdir, records.read_all(workdir), time.perf_counter() - t_start)
  if main:
    log.info('table (%s):\n%s', workdir / 'table.md', (workdir / 'table.md').read_text())
  return payload

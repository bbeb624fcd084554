"""The benchmark: raw KMeans, AE+KMeans and the clustering methods (DEC, IDEC, ...) over seeds, as a table.

Workdir layout (re-running the same command resumes: finished trials are skipped, the unfinished one continues
from its last checkpoint; a requested method whose clustering settings changed is redone from the saved
autoencoders):
  config.json  trials.csv  summary.json  table.md  clusters.png  log.txt  report.html (+ figures/)
  assignments.csv       unlabelled data: each image's cluster and confidence per method
  tensorboard/          with config.tensorboard
  seed_S/trials.csv     the finished trials of seed S: the record (the top-level trials.csv is their union)
  seed_S/methods.json   the clustering settings each method's trial was made with
  seed_S/ae/            autoencoder checkpoints (what keep_checkpoints keeps once it finished), metrics.jsonl,
                        params (final: a finished pretraining)
  seed_S/ae_kmeans.npz  k-means on the embedding (labels, centres): AE+KMeans and the start of every method
  seed_S/METHOD/        checkpoints, metrics.jsonl, params (final); seed_S/METHOD_labels.npz (eval labels)

A process takes its seeds in batches of `seed_batch` (`seed_batch_size`): the autoencoders of a batch pretrain
as one vmapped program, then each method runs on all seeds of the batch (a fine-tuning method as one program,
`dec.run_seeds`; the other kinds seed by seed). Every record stays per seed.

Processes may share a workdir (`udl_jax.records`: one process per seed at a time, merged records), and a seed
folder copied from another workdir of the same config joins its table. Each process rewrites the table from
every seed folder when it finishes. Several processes of one job (`--config.distributed`) act as one.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import zipfile
from pathlib import Path

import jax
import numpy as np

from udl_jax import (checkpoint, clustering, config as udl_config, data, dec, log, methods, metrics, models,
                     parallel, plots, progress, records, report, results, train)
from udl_jax.errors import Diverged, UserError


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
    self._ae = self._kmeans = self._z_fit = self._collapse = None

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
    if self.needs_pretraining():
      pretrain([self])
    return self._ae

  def needs_pretraining(self) -> bool:
    if self._ae is None:
      self._ae = self._finished_autoencoder()
    return self._ae is None

  def _pretrained(self, state, history: list[dict]) -> None:
    """Saves a finished pretraining: params, then metrics.jsonl (written last: it marks it finished)."""
    params = jax.device_get(state.params)
    checkpoint.save_tree(self.dir / 'ae' / 'params', params)
    results.write_jsonl(self.dir / 'ae' / 'metrics.jsonl', history)
    prune_checkpoints(self.dir / 'ae' / 'checkpoints', self.config.get('keep_checkpoints', 'keep'))
    self._ae = params, float(sum(h['seconds'] for h in history))

  def collapse(self) -> str | None:
    """Why this seed's pretrained autoencoder learned nothing (`train.collapse_reason`), or None; said once."""
    if self._collapse is None:
      self._collapse = train.collapse_reason(self.model, self.autoencoder()[0],
                                            self.x[self.fit_idx[:train.COLLAPSE_ROWS]]) or ''
      if self._collapse:
        log.info('seed %d: %s. Every method that starts from it is recorded as failed on this seed; raw-pixel '
                 'KMeans is not. A learning rate too large for the network (pretrain.learning_rate %s here) kills '
                 'its ReLUs in the first steps: other seeds may train, or lower it.', self.seed, self._collapse,
                 self.config.pretrain.learning_rate)
    return self._collapse or None

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
    labels, centres = self.kmeans(self.fit_embedding(), 'the embedding')
    results.write_npz(path, labels=labels, centres=centres)
    return labels, centres

  def kmeans(self, x: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centres) of k-means (the config's n_init) on the fit rows `x`, computed on process 0 and
    broadcast; the status line names it while it runs (minutes on 70k images, with no step to count)."""
    n_init = self.config.cluster.kmeans_n_init
    like = (np.zeros(len(x), np.int32), np.zeros((self.n_clusters, x.shape[1]), np.float32))
    with progress.phase(f'k-means on {what} ({x.shape[0]} x {x.shape[1]}, {n_init} inits)'):
      return parallel.computed_on_main(lambda: clustering.kmeans(x, self.n_clusters, self.seed, n_init), like)

  def score(self, eval_labels: np.ndarray) -> dict:
    y = self.dataset.y
    return metrics.evaluate(None if y is None else y[self.eval_idx], eval_labels)


def pretrain(runs: list[SeedRun]) -> None:
  """Pretrains the autoencoders of `runs` (seeds of one config) together, as one seed batch (`train.fit_seeds`):
  each seed with its own training/validation split of its fit rows, checkpoints and result."""
  first, cfg = runs[0], runs[0].config.pretrain
  splits = []
  for run in runs:
    tr, va = train.split_train_val(len(run.fit_idx), cfg.val_fraction, run.seed)
    splits.append((run.fit_idx[tr], run.fit_idx[va]))
  trained = train.fit_seeds(first.config.model.name, first.model, first.config.model, cfg, first.x, splits,
                            [run.seed for run in runs], [run.dir / 'ae' / 'checkpoints' for run in runs],
                            first.mesh, image_shape=first.dataset.image_shape)
  for run, (state, history) in zip(runs, trained):
    run._pretrained(state, history)


def run_trials(runs: list[SeedRun], method: str) -> list[tuple[dict, np.ndarray | None, np.ndarray | None]]:
  """(trial row, labels of the evaluation set, confidence or None) of one method on each seed of `runs`: a
  fine-tuning method trains them as one seed batch, the other kinds (k-means, clusterers of the embedding,
  methods with their own training) go seed by seed. A seed whose training diverged, or whose autoencoder
  collapsed (for every method but raw-pixel KMeans), gets a row that says so (`failed`) and no labels: the other
  seeds, and the run, go on."""
  config = runs[0].config
  collapsed = {run.seed: run.collapse() for run in runs} if methods.needs_autoencoder(method) else {}
  alive = [run for run in runs if not collapsed.get(run.seed)]
  outcomes = dict(zip([run.seed for run in alive], _outcomes(alive, method))) if alive else {}
  trials = []
  for run in runs:
    eval_labels, confidence, extra = outcomes.get(run.seed) or (
        None, None, {'failed': collapsed[run.seed], 'seconds': 0.0, 'pretrain_seconds': run.autoencoder()[1]})
    row = {'seed': run.seed, 'method': method, 'protocol': config.protocol, 'pretrain_seconds': None,
           'iterations': None, **extra}
    if eval_labels is not None:
      row.update(run.score(eval_labels))
      results.write_npz(run.dir / f'{method}_labels.npz', labels=eval_labels, index=run.eval_idx,
                        **({} if confidence is None else {'confidence': confidence}))
    trials.append((row, eval_labels, confidence))
  return trials


def _outcomes(runs: list[SeedRun], method: str) -> list[tuple[np.ndarray | None, np.ndarray | None, dict]]:
  """(evaluation labels or None, confidence or None, row fields) of `method` on each seed of `runs`."""
  if method in methods.BASELINES:
    return [_baseline_trial(run, method) for run in runs]
  pretrained = [run.autoencoder() for run in runs]
  method_obj = methods.get(method, **udl_config.method_kwargs(runs[0].config.cluster, method))
  if isinstance(method_obj, methods.FineTuner):
    outcomes = _fine_tuning_trials(runs, method_obj, [params for params, _ in pretrained])
  else:
    kind = {methods.EmbeddingClusterer: _embedding_trial, methods.OwnTrainer: _own_training_trial}[type(method_obj)]
    outcomes = [_timed(kind, run, method_obj, params) for run, (params, _) in zip(runs, pretrained)]
  return [(None if q is None else q.argmax(1).astype(np.int32), None if q is None else q.max(1),
           {'pretrain_seconds': seconds, **extra}) for (q, extra), (_, seconds) in zip(outcomes, pretrained)]


def _diverged(at: int, unit: str) -> dict:
  """The row fields of a trial whose loss became non-finite (`errors.Diverged`): no result, and where."""
  return {'failed': f'diverged at {unit} {at}'}


def _timed(kind, run: SeedRun, method, params) -> tuple[np.ndarray, dict]:
  t0 = time.perf_counter()
  q, extra = kind(run, method, params)
  return q, {'seconds': time.perf_counter() - t0, **extra}


def _baseline_trial(run: SeedRun, method: str) -> tuple[np.ndarray, None, dict]:
  """(evaluation labels, None, row fields) of raw-pixel KMeans or AE+KMeans (whose time leaves out pretraining)."""
  holdout = run.config.protocol == 'holdout'
  extra = {}
  if method == 'kmeans':
    t0 = time.perf_counter()
    flat = run.dataset.flat
    labels, centres = run.kmeans(flat[run.fit_idx], 'raw pixels')
    eval_labels = nearest_centre(flat[run.eval_idx], centres) if holdout else labels
  else:
    params, extra['pretrain_seconds'] = run.autoencoder()
    t0 = time.perf_counter()
    labels, centres = run.ae_kmeans()
    eval_labels = nearest_centre(train.embed(run.model, params, run.x[run.eval_idx], run.mesh), centres) \
        if holdout else labels
  return eval_labels, None, {**extra, 'seconds': time.perf_counter() - t0}


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
  with progress.phase(f'{method.name} on the embedding ({z_fit.shape[0]} x {z_fit.shape[1]})'):
    q = parallel.computed_on_main(fit_and_predict, np.zeros((len(z_eval), run.n_clusters), np.float32))
  return q, {}


def _fine_tuning_trials(runs: list[SeedRun], method: methods.FineTuner,
                        params: list) -> list[tuple[np.ndarray | None, dict]]:
  """The shared clustering loop from each seed's k-means start, the seeds as one batch (`dec.run_seeds`); saves
  each seed's model for `assign`, and of a seed that diverged its history only (no q)."""
  first = runs[0]
  inits = [run.ae_kmeans() for run in runs]
  cluster_cfg = udl_config.method_cluster_block(first.config.cluster, method.name)
  clustered = dec.run_seeds(first.model, params, first.x, [run.fit_idx for run in runs], first.dataset.y,
                            first.n_clusters, method, cluster_cfg, [run.seed for run in runs],
                            [run.dir / method.name / 'checkpoints' for run in runs], first.mesh, inits=inits,
                            image_shape=first.dataset.image_shape)
  outcomes = []
  for run, result in zip(runs, clustered):
    results.write_jsonl(run.dir / method.name / 'metrics.jsonl', result.history)
    # Compute time of the whole clustering phase (the seed's share of a batch's), also when resumed half-way.
    seconds = sum(h['update_seconds'] + h.get('chunk_seconds', 0.0) for h in result.history)
    if result.diverged_at is not None:
      outcomes.append((None, {'iterations': result.diverged_at, 'seconds': seconds,
                              **_diverged(result.diverged_at, 'iteration')}))
      continue
    checkpoint.save_tree(run.dir / method.name / 'params', result.params)
    q = dec.predict_on_host(run.model, result.params, run.x[run.eval_idx],
                            dec.assignment(method, cluster_cfg.alpha), run.mesh)[0] \
        if run.config.protocol == 'holdout' else result.q
    outcomes.append((q, {'iterations': result.iterations, 'seconds': seconds}))
  return outcomes


def _own_training_trial(run: SeedRun, method: methods.OwnTrainer, params) -> tuple[np.ndarray | None, dict]:
  """A method with its own model: it gets the seed's data, autoencoder, k-means start and its settings (no q
  when its training diverged). Its time is the sum of its history's `seconds`, so that a run resumed half-way
  counts the epochs of every process (the wall time of a diverged one, which has no history)."""
  seed = methods.Seed(model=run.model, ae_params=params, x=run.x[run.fit_idx],
                      y=None if run.dataset.y is None else run.dataset.y[run.fit_idx], n_clusters=run.n_clusters,
                      init=run.ae_kmeans(), seed=run.seed,
                      config=udl_config.method_cluster_block(run.config.cluster, method.name),
                      workdir=run.dir / method.name, mesh=run.mesh)
  try:
    labels, q, history = method.run(seed)
  except Diverged as e:
    log.info('%s (this seed is recorded as diverged)', e)
    return None, _diverged(e.at, 'epoch')
  results.write_jsonl(run.dir / method.name / 'metrics.jsonl', history)
  return _soft(labels, q, run.n_clusters), {'seconds': sum(h.get('seconds', 0.0) for h in history)}


def _trial_keys(rows) -> set[tuple[int, str]]:
  return {(r['seed'], r['method']) for r in rows}


def requested_seeds(config) -> list[int]:
  return list(range(config.first_seed, config.first_seed + config.seeds))


def write_outputs(config, dataset: data.Dataset, workdir: Path, rows: list[dict], wall_seconds: float) -> dict:
  """trials.csv (every finished trial of the workdir: the record), and summary.json / table.md of exactly the
  requested seeds and methods: a trial kept from another command (another seed, a dropped method) is left out."""
  method_names, seeds = udl_config.method_list(config), requested_seeds(config)
  results.write_trials(workdir / 'trials.csv', rows)
  rows = [r for r in rows if r['seed'] in seeds and r['method'] in method_names]
  missing = len(seeds) * len(method_names) - len(_trial_keys(rows))
  summary = results.summarize(rows, method_names)
  payload = {'dataset': config.dataset, 'protocol': config.protocol, 'n_samples': len(dataset),
             'seeds': seeds, 'complete': missing == 0, 'missing_trials': missing, 'methods': summary,
             'wall_seconds_this_process': wall_seconds, 'config': config.to_dict(),
             'environment': results.environment()}
  results.write_json(workdir / 'summary.json', payload)
  header = (f'{config.dataset} ({len(dataset)} images), protocol {config.protocol}, '
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({_span(seeds)}), dtype {config.dtype}, NMI "
            'arithmetic' + (f", {udl_config.REFERENCES[config.reference]['name']} reference mode"
                            if config.get('reference') else '')
            + (f', INCOMPLETE: {missing} of {len(seeds) * len(method_names)} trials not finished' if missing else '')
            + '\n\n')
  table = header + results.markdown_table(summary) + results.table_notes(summary)
  results.write_atomic(workdir / 'table.md', table)
  if parallel.is_main_process():  # this process's table: another one sharing the workdir may rewrite the file
    log.info('table (%s):\n%s', workdir / 'table.md', table)
  _cluster_figure(dataset, workdir, rows)
  if dataset.y is None:
    _write_assignments(dataset, workdir, rows)
  report.write_report(workdir, config, dataset)
  return payload


def _write_assignments(dataset: data.Dataset, workdir: Path, rows: list[dict]) -> None:
  """An unlabelled run (a photo folder): each image's cluster and confidence from each method's trial of the
  first seed, in one CSV (image, then METHOD_cluster and METHOD_confidence per method)."""
  seed = min((r['seed'] for r in rows), default=None)
  if seed is None:
    return
  columns = {}
  for method in [r['method'] for r in results.scored(rows) if r['seed'] == seed]:
    with np.load(workdir / f'seed_{seed}' / f'{method}_labels.npz') as saved:
      index = saved['index']
      columns[f'{method}_cluster'] = saved['labels']
      if 'confidence' in saved:
        columns[f'{method}_confidence'] = np.round(saved['confidence'], 4)
  ids = dataset.ids if dataset.ids is not None else [str(i) for i in range(len(dataset))]
  lines = [','.join(['image', *columns])]
  lines += [','.join([ids[i], *(str(c[j]) for c in columns.values())]) for j, i in enumerate(index)]
  results.write_atomic(workdir / 'assignments.csv', '\n'.join(lines) + '\n')


def prune_checkpoints(directory: Path, keep: str) -> None:
  """After a phase finished (its params are saved), what `keep_checkpoints` keeps of its checkpoints: 'keep'
  all that orbax kept, the 'last' step only, or 'none' (a finished phase is never resumed)."""
  if keep == 'keep' or not parallel.is_main_process() or not directory.exists():
    return
  steps = sorted((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
  for path in steps[:-1] if keep == 'last' else [directory]:
    shutil.rmtree(path, ignore_errors=True)


def _cluster_figure(dataset: data.Dataset, workdir: Path, rows: list[dict]) -> None:
  """Sample images per cluster for the best run of the first deep method that has one (by ACC, else any)."""
  for method in ('dec', 'idec', 'ae_kmeans', 'kmeans'):
    mine = [r for r in results.scored(rows) if r['method'] == method]
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
  return records.SELECTION_KEYS + ('distributed', 'pretrain.checkpoint_every', 'keep_checkpoints', 'seed_batch',
                                   'tensorboard', 'download') + cluster


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


def _seed_needs(config, workdir: Path, seed: int, method_names: list[str]) -> tuple[list[str], list[str]]:
  """Read only: the requested methods of `seed` recorded with other clustering settings (stale), and those it
  still needs (unrecorded or stale)."""
  stale = records.stale_methods(workdir, seed, method_names, config.cluster.to_dict())
  done = {r['method'] for r in records.read_seed(workdir, seed)}
  return stale, [m for m in method_names if m not in done or m in stale]


def _methods_to_run(config, workdir: Path, seed: int, method_names: list[str]) -> list[str]:
  """The requested methods seed still needs: unfinished, or finished with clustering settings that changed
  (their records are forgotten). Decided by process 0 (holding the seed's lock) and broadcast, so every process
  runs the same trials."""
  def decide():
    stale, needed = _seed_needs(config, workdir, seed, method_names)
    if stale:
      log.info('seed %d: clustering settings of %s changed: those trials are redone from the saved '
               'autoencoder', seed, ', '.join(stale))
      records.forget_trials(workdir, seed, stale)
    return np.asarray([m in needed for m in method_names])
  decided = parallel.computed_on_main(decide, np.zeros(len(method_names), bool))
  return [m for m, wanted in zip(method_names, decided) if wanted]


def _span(seeds: list[int]) -> str:
  return f'{seeds[0]}..{seeds[-1]}' if len(seeds) > 1 else str(seeds[0])


def _time_estimate(rows: list[dict], remaining: list[tuple[int, str]],
                   pretraining_now: frozenset[int] = frozenset()) -> float | None:
  """Seconds the `remaining` (seed, method) trials should take, from the finished trials' times (each seed's
  pretraining counted once, and not at all for the seeds `pretraining_now`, whose pretraining is the running
  phase, already in its own ETA); None until every method among them has been timed."""
  seconds: dict[str, list[float]] = {}
  for r in rows:
    seconds.setdefault(r['method'], []).append(r['seconds'])
  pretrain = [r['pretrain_seconds'] for r in rows if r['pretrain_seconds'] is not None]
  pretrained = {r['seed'] for r in rows if r['pretrain_seconds'] is not None}
  to_pretrain = {s for s, m in remaining if methods.needs_autoencoder(m)} - pretrained - pretraining_now
  if any(m not in seconds for _, m in remaining) or (to_pretrain and not pretrain):
    return None
  return sum(float(np.mean(seconds[m])) for _, m in remaining) + len(to_pretrain) * float(np.mean(pretrain or [0]))


def plan(config, workdir: str | Path) -> str:
  """What `run` would do in `workdir`: the trials still to run and those already finished (`--print_config`)."""
  workdir = Path(workdir)
  method_names = udl_config.method_list(config)
  lines = [f'planned trials in {workdir} (dataset {config.dataset}, protocol {config.protocol}):']
  for seed in requested_seeds(config):
    stale, todo = _seed_needs(config, workdir, seed, method_names)
    done = [m for m in method_names if m not in todo]
    notes = ([f"again, recorded with other clustering settings: {', '.join(stale)}"] if stale else []) + \
        ([f"finished: {', '.join(done)}"] if done else [])
    lines.append(f"  seed {seed}: run {', '.join(todo) or 'nothing'}" + (f" ({'; '.join(notes)})" if notes else ''))
  deep = [m for m in method_names if methods.needs_autoencoder(m)]
  if deep:
    lines.append(f'  each seed without a finished autoencoder first pretrains {config.model.name} for '
                 f'{config.pretrain.epochs} epochs ({config.pretrain.optimizer}, lr {config.pretrain.learning_rate}'
                 f"{', augmented batches' if config.pretrain.augment else ''})")
  return '\n'.join(lines)


def _claim_seed(workdir: Path, seed: int, wait: bool) -> contextlib.ExitStack | None:
  """The seed's lock, or None when another process holds it and `wait` is False: processes sharing a workdir
  then split the seeds instead of queueing behind each other. Process 0 takes it; every process learns the
  outcome (a multi-process job acts as one)."""
  held = contextlib.ExitStack()

  def take():
    try:
      held.enter_context(records.seed_lock(workdir, seed, wait))
      return np.asarray(True)
    except records.Busy:
      return np.asarray(False)
  return held if bool(parallel.computed_on_main(take, np.asarray(False))) else None


def _finished(config, workdir: Path, wanted: set[tuple[int, str]]) -> set[tuple[int, str]]:
  """The (seed, method) trials of `wanted` finished in the workdir, by this process or any other, with the current
  clustering settings (a stale trial is to run again). Read only."""
  method_names = sorted({m for _, m in wanted})
  needs = {seed: _seed_needs(config, workdir, seed, method_names)[1] for seed in {s for s, _ in wanted}}
  return {(s, m) for s, m in wanted if m not in needs[s]}


def _trials_needed(config, workdir: Path, seeds: list[int], method_names: list[str]) -> list[int]:
  """How many requested trials each seed still needs, decided by process 0 (no lock): a seed with none needs no
  lock, so a command that only writes the table does not wait behind another process's trials of the same seed."""
  def decide():
    return np.asarray([len(_seed_needs(config, workdir, seed, method_names)[1]) for seed in seeds])
  return [int(n) for n in parallel.computed_on_main(decide, np.zeros(len(seeds), int))]


def _tidy_finished_seed(workdir: Path, seed: int) -> None:
  """Removes what killed writes left in a seed with nothing to run, unless another process works on it (that
  process tidies it when it takes the seed)."""
  lock = _claim_seed(workdir, seed, wait=False)
  if lock is not None:
    with lock:
      if parallel.is_main_process():
        records.remove_stale_temporaries(workdir / f'seed_{seed}', recursive=True)


def _run_group(config, dataset, workdir: Path, mesh, group: list[int], method_names: list[str], wanted: set,
               timed: list[dict], later_seeds: list[int], processes: int) -> None:
  """The requested trials of the seeds of `group` (their locks held) that are not finished, the seeds as one
  batch where a method allows it (pretraining, fine-tuning methods). `timed` (finished rows, appended to) and
  the unfinished trials of `later_seeds` (shared by `processes`) estimate the run's ETA; the trial count shown
  includes what other processes sharing the workdir finished."""
  main = parallel.is_main_process()
  todo = {}
  for seed in group:
    if main:
      records.remove_stale_temporaries(workdir / f'seed_{seed}', recursive=True)
    todo[seed] = _methods_to_run(config, workdir, seed, method_names)
  finished = _finished(config, workdir, wanted)
  later = [(s, m) for s in later_seeds for m in method_names if (s, m) not in finished]
  progress.trials_done(len(finished))
  runs = {seed: SeedRun(config, dataset, seed, workdir, mesh) for seed in group}
  untrained = [runs[s] for s in group
               if any(map(methods.needs_autoencoder, todo[s])) and runs[s].needs_pretraining()]
  if len(untrained) > 1:
    progress.set_trial(f"seeds {', '.join(str(r.seed) for r in untrained)} pretraining", None)
    pretrain(untrained)
  for method in method_names:
    batch = [runs[s] for s in group if method in todo[s]]
    if not batch:
      continue
    after = method_names[method_names.index(method) + 1:]
    remaining = [(r.seed, method) for r in batch[1:]] + [(s, m) for s in group for m in todo[s] if m in after]
    now = frozenset({batch[0].seed} if methods.needs_autoencoder(method) else ())  # pretrains first, if it must
    rest = _time_estimate(timed, remaining, now), _time_estimate(timed, later)
    progress.set_trial(f"seed{'s' if len(batch) > 1 else ''} {', '.join(str(r.seed) for r in batch)} {method}",
                       None if None in rest else rest[0] + rest[1] / processes)
    for run, (row, _, _) in zip(batch, run_trials(batch, method)):
      settings = None if method in methods.BASELINES else udl_config.method_settings(config.cluster.to_dict(), method)
      if main:
        records.add_trial(workdir, row, settings)
      prune_checkpoints(run.dir / method / 'checkpoints', config.get('keep_checkpoints', 'keep'))
      timed.append(row)
      done = len(_finished(config, workdir, wanted) | {(run.seed, method)})
      progress.trials_done(done)
      # a failed trial's line names the failure; its detail (said once per seed) is in trials.csv
      scores = (f"failed: {row['failed'].split(' (', 1)[0]}" if row.get('failed') else
                ' '.join(f'{k} {row[k]:.3f}' for k in results.METRICS if k in row))
      log.info('trial %d/%d seed %d %s: %s (%.1f s)', done, len(wanted), run.seed, method, scores, row['seconds'])
  if main and any(todo.values()):
    records.write_union(workdir)


def seed_batch_size(config, processes: int) -> int:
  """How many seeds train as one program: `seed_batch`, or when 0 (auto) every seed of this process on an
  accelerator, and 1 on a CPU (measured no faster batched: benchmarks/README.md). Convolutions on the CPU
  train seed by seed (no scan)."""
  size = config.get('seed_batch', 0) or (1 if jax.default_backend() == 'cpu' else -(-config.seeds // processes))
  if size > 1 and not train.epoch_as_scan(config.model.name):
    log.info('seed_batch %d: %s on the CPU trains seed by seed (no scan); running one seed at a time', size,
             config.model.name)
    return 1
  return size


def run(config, workdir: str | Path, processes: int = 1, write_tables: bool = True) -> dict | None:
  """Runs (or resumes) every seed x method trial of `config` in `workdir`; returns the summary.

  Several processes may share a workdir: each seed is worked on by one at a time (its lock), and the records
  merge; `processes` says how many share this run's seeds (for the ETA). A process that does not
  `write_tables` (a worker of the launcher's `--processes`) only adds trials. In a multi-process (multi-host)
  job, process 0 does every file write and takes the locks.
  """
  methods.import_plugins(config.get('imports', ''))
  udl_config.validate(config)
  if config.get('tensorboard'):
    report.require_tensorboard()  # a missing package fails now, not after the last trial
  if config.distributed:
    parallel.initialize_distributed()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  dataset = data.from_config(config)
  mesh = parallel.make_mesh()
  for change in udl_config.fit_batch_sizes(config, len(dataset), mesh.devices.size):
    log.info('small folder: %s', change)
  udl_config.validate_for_data(config, dataset, mesh)
  finished = _prepare_workdir(config, workdir, dataset)
  method_names, seeds = udl_config.method_list(config), requested_seeds(config)
  wanted = {(s, m) for s in seeds for m in method_names}
  needed = _trials_needed(config, workdir, seeds, method_names)
  done = len(wanted) - sum(needed)  # stale trials count as not done: they run again
  timed = list(finished)  # trials whose times estimate the rest of the run
  t_start = time.perf_counter()
  log.info('benchmark %s: %d images, seeds %s x %s, protocol %s, %d of %d trials already done (per-step lines: '
           '%s)', config.dataset, len(dataset), _span(seeds), ','.join(method_names), config.protocol, done,
           len(wanted), workdir / 'log.txt')
  progress.start_run(len(wanted), done)
  try:
    pending, wait = [seed for seed, n in zip(seeds, needed) if n], False
    for seed in [s for s in seeds if s not in pending]:
      _tidy_finished_seed(workdir, seed)
    batch_size = seed_batch_size(config, processes)
    while pending:  # first pass: the seeds no other process is working on; then wait for the rest
      busy, group, held = [], [], contextlib.ExitStack()
      for i, seed in enumerate(pending):
        lock = _claim_seed(workdir, seed, wait)
        if lock is None:
          log.info('seed %d: another process is working on it; coming back to it at the end', seed)
          busy.append(seed)
        else:
          held.enter_context(lock)
          group.append(seed)
        if group and (len(group) == batch_size or i == len(pending) - 1):
          with held:
            _run_group(config, dataset, workdir, mesh, group, method_names, wanted, timed,
                       [s for s in pending[i + 1:]], processes)
          group, held = [], contextlib.ExitStack()
      pending, wait = busy, True
  finally:
    progress.end_run()
  if not write_tables:
    return None
  parallel.barrier('trials done')
  # Re-read: processes running other seeds in this workdir may have finished trials meanwhile.
  return write_outputs(config, dataset, workdir, records.read_all(workdir), time.perf_counter() - t_start)

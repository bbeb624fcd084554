"""The benchmark: raw KMeans, AE+KMeans and the clustering methods (DEC, IDEC, ...) over seeds, as a table.

Workdir layout (re-running the same command resumes: finished trials are skipped, the unfinished one continues
from its last checkpoint; a method whose clustering settings changed is redone from the saved autoencoders):
  config.json  trials.csv  summary.json  table.md  clusters.png  log.txt
  seed_S/trials.csv   the finished trials of seed S: the record; the top-level trials.csv is their union
  seed_S/ae/          autoencoder checkpoints, metrics.jsonl, params (final)
  seed_S/ae_kmeans.npz  k-means on the embedding (labels, centres): AE+KMeans and the start of every method
  seed_S/METHOD/      checkpoints, metrics.jsonl, params (final), result.npz (eval labels, confidence)

Because each seed keeps its own record, processes running different seeds (`--config.first_seed=K
--config.seeds=1`) may share one workdir at the same time, and a seed folder copied from another workdir of the
same config joins its table. Each process rewrites the table from every seed folder when it finishes.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from pathlib import Path
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from udl_jax import (checkpoint, clustering, config as udl_config, data, dec, log, methods, metrics, models,
                     parallel, plots, results, train)
from udl_jax.errors import UserError


def load_dataset(config) -> data.Dataset:
  return data.load(config.dataset, config.data_dir or None, image_size=config.image_size,
                   labels_csv=config.labels_csv or None)


def protocol_split(n: int, config, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(fit indices, evaluation indices): all/all for transductive, a seeded split for holdout."""
  if config.protocol == 'transductive':
    everything = np.arange(n)
    return everything, everything
  return train.split_train_val(n, config.holdout_fraction, seed)


def nearest_centre(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
  return np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1).astype(np.int32)


def build_model(config, image_shape):
  return models.make_model(config.model.name, image_shape, config.model, train.compute_dtype(config.dtype))


class SeedRun:
  """The shared pieces of one seed (pretrained autoencoder, its k-means) computed once and cached on disk."""

  def __init__(self, config, dataset: data.Dataset, seed: int, workdir: Path, mesh):
    self.config, self.dataset, self.seed, self.mesh = config, dataset, seed, mesh
    self.dir = workdir / f'seed_{seed}'
    self.fit_idx, self.eval_idx = protocol_split(len(dataset), config, seed)
    self.x = models.model_input(config.model.name, dataset.x)
    self.model = build_model(config, dataset.image_shape)
    self.n_clusters = config.n_clusters or dataset.num_classes
    self._ae = None

  def autoencoder(self) -> tuple[dict, float]:
    """(params, pretraining seconds), training or resuming as needed."""
    if self._ae is None:
      cfg = self.config.pretrain
      x_fit = self.x[self.fit_idx]
      tr, va = train.split_train_val(len(x_fit), cfg.val_fraction, self.seed)
      state, history = train.fit(self.config.model.name, self.model, self.config.model, cfg, x_fit[tr],
                                 x_fit[va] if len(va) else None, self.seed, self.dir / 'ae' / 'checkpoints',
                                 self.mesh)
      results.write_jsonl(self.dir / 'ae' / 'metrics.jsonl', history)
      params = jax.device_get(state.params)
      checkpoint.save_tree(self.dir / 'ae' / 'params', params)
      self._ae = params, float(sum(h['seconds'] for h in history))
    return self._ae

  def ae_kmeans(self) -> tuple[np.ndarray, np.ndarray]:
    """k-means (n_init from the config) on the embedding of the fit set: (labels, centres), cached."""
    path = self.dir / 'ae_kmeans.npz'
    if path.exists():
      saved = np.load(path)
      return saved['labels'], saved['centres']
    params, _ = self.autoencoder()
    z = train.embed(self.model, params, self.x[self.fit_idx])
    labels, centres = clustering.kmeans(z, self.n_clusters, self.seed, self.config.cluster.kmeans_n_init)
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
    labels, centres = clustering.kmeans(flat[run.fit_idx], run.n_clusters, run.seed, config.cluster.kmeans_n_init)
    eval_labels = nearest_centre(flat[run.eval_idx], centres) if holdout else labels
  elif method == 'ae_kmeans':
    params, row['pretrain_seconds'] = run.autoencoder()
    t0 = time.perf_counter()
    labels, centres = run.ae_kmeans()
    eval_labels = nearest_centre(train.embed(run.model, params, run.x[run.eval_idx]), centres) if holdout \
        else labels
  else:
    params, row['pretrain_seconds'] = run.autoencoder()
    init = run.ae_kmeans()
    t0 = time.perf_counter()
    kwargs = config.cluster.method_kwargs.get(method, {}) if 'method_kwargs' in config.cluster else {}
    method_obj = methods.get(method, **dict(kwargs))
    y_fit = None if run.dataset.y is None else run.dataset.y[run.fit_idx]
    cluster_cfg = udl_config.method_cluster_block(config.cluster, method)
    result = dec.run(run.model, params, run.x[run.fit_idx], y_fit, run.n_clusters, method_obj, cluster_cfg,
                     run.seed, run.dir / method / 'checkpoints', run.mesh, init=init)
    results.write_jsonl(run.dir / method / 'metrics.jsonl', result.history)
    checkpoint.save_tree(run.dir / method / 'params', result.params)
    row['iterations'] = result.iterations
    # Compute time of the whole clustering phase, also when this process resumed it half-way.
    row['seconds'] = sum(h['update_seconds'] + h.get('chunk_seconds', 0.0) for h in result.history)
    if holdout:
      q, _ = dec.make_predict(run.model, config.cluster.alpha)(result.params, jnp.asarray(run.x[run.eval_idx]))
      q = np.asarray(q)
    else:
      q = result.q
    eval_labels, confidence = q.argmax(1).astype(np.int32), q.max(1)
  row.setdefault('seconds', time.perf_counter() - t0)
  row.update(run.score(eval_labels))
  results.write_npz(run.dir / f'{method}_labels.npz', labels=eval_labels, index=run.eval_idx,
                    **({} if confidence is None else {'confidence': confidence}))
  return row, eval_labels, confidence


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


def import_plugins(modules: str) -> None:
  """Imports the comma-separated modules that register extra clustering methods (`--config.imports`)."""
  for name in filter(None, (m.strip() for m in modules.split(','))):
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise UserError(f"--config.imports: cannot import '{name}' ({e}); it must be importable from the "
                      'current directory or the installed packages') from e


def _stale_methods(config, path: Path) -> list[str]:
  """Clustering methods whose settings changed since the run in this workdir: their trials are redone.

  Only the clustering phase may change between two runs in one workdir (and seeds and methods): the saved
  autoencoders and k-means starts are reused. Any other change would mix incomparable trials: refused.
  """
  if not path.exists():
    return []
  before, now = json.loads(path.read_text()), json.loads(json.dumps(config.to_dict(), default=str))
  changed = sorted(k for k in set(before) & set(now) if k not in ('seeds', 'first_seed', 'methods', 'cluster')
                   and before[k] != now[k])
  if before.get('cluster', {}).get('kmeans_n_init') != now['cluster']['kmeans_n_init']:
    changed.append('cluster.kmeans_n_init')
  if changed:
    raise UserError(f'{path.parent} holds a run with different settings ({", ".join(changed)}); use a new '
                    '--workdir, or the same config (only seeds, methods and the clustering settings of the '
                    'methods may change when resuming)')
  old_cluster = {**udl_config.LEGACY_CLUSTER_DEFAULTS, **before.get('cluster', {})}
  return [m for m in methods.names() if udl_config.method_settings(old_cluster, m)
          != udl_config.method_settings(now['cluster'], m)]


def read_all_trials(workdir: Path) -> list[dict]:
  """Every finished trial in `workdir`, from the seed folders' trials.csv files.

  Workdirs from before per-seed records kept only the top-level trials.csv: rows of a seed folder that has no
  record yet are moved into it first (rows of a deleted seed folder are dropped: that seed runs again).
  """
  legacy = {}
  for row in results.read_trials(workdir / 'trials.csv'):
    legacy.setdefault(row['seed'], []).append(row)
  for seed, rows in legacy.items():
    seed_dir = workdir / f'seed_{seed}'
    if seed_dir.is_dir() and not (seed_dir / 'trials.csv').exists():
      results.write_trials(seed_dir / 'trials.csv', rows)
  return [r for path in sorted(workdir.glob('seed_*/trials.csv')) for r in results.read_trials(path)]


def record_trials(workdir: Path, seeds: Iterable[int], rows: list[dict]) -> None:
  """Writes the records of `seeds` (their rows in `rows`), then the top-level union of every seed's, once."""
  for seed in seeds:
    results.write_trials(workdir / f'seed_{seed}' / 'trials.csv', [r for r in rows if r['seed'] == seed])
  results.write_trials(workdir / 'trials.csv', read_all_trials(workdir))


def _forget_trials(workdir: Path, rows: list[dict], stale: list[str]) -> list[dict]:
  """Drops the trials of `stale` methods: rows first (atomically), then their checkpoints and labels."""
  kept = [r for r in rows if r['method'] not in stale]
  if len(kept) < len(rows):
    log.info('clustering settings of %s changed: their %d trials are redone from the saved autoencoders',
             ', '.join(sorted({r['method'] for r in rows} & set(stale))), len(rows) - len(kept))
  record_trials(workdir, {r['seed'] for r in rows}, kept)
  for method in stale:
    for seed_dir in workdir.glob('seed_*'):
      shutil.rmtree(seed_dir / method, ignore_errors=True)
      (seed_dir / f'{method}_labels.npz').unlink(missing_ok=True)
  return kept


def _span(seeds: list[int]) -> str:
  return f'{seeds[0]}..{seeds[-1]}' if len(seeds) > 1 else str(seeds[0])


def run(config, workdir: str | Path) -> dict:
  """Runs (or resumes) every seed x method trial of `config` in `workdir`; returns the summary."""
  import_plugins(config.get('imports', ''))
  udl_config.validate(config)
  if config.distributed:
    parallel.initialize_distributed()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  dataset = load_dataset(config)
  if not (config.n_clusters or dataset.num_classes):
    raise UserError(f'{config.dataset} has no labels: set --config.n_clusters to the number of clusters wanted')
  stale = _stale_methods(config, workdir / 'config.json')
  rows = read_all_trials(workdir)
  if stale:
    rows = _forget_trials(workdir, rows, stale)
  results.write_json(workdir / 'config.json', config.to_dict())
  results.write_json(workdir / 'image_shape.json', list(dataset.image_shape))  # what `assign` must match
  mesh = parallel.make_mesh()
  method_names = udl_config.method_list(config)
  seeds = list(range(config.first_seed, config.first_seed + config.seeds))
  wanted = {(s, m) for s in seeds for m in method_names}
  finished = {(r['seed'], r['method']) for r in rows} & wanted
  t_start = time.perf_counter()
  log.info('benchmark %s: %d images, seeds %s x %s, protocol %s, %d of %d trials already done', config.dataset,
           len(dataset), _span(seeds), ','.join(method_names), config.protocol, len(finished), len(wanted))
  for seed in seeds:
    seed_run = SeedRun(config, dataset, seed, workdir, mesh)
    for method in method_names:
      if (seed, method) in finished:
        continue
      row, _, _ = run_trial(seed_run, method)
      rows.append(row)
      record_trials(workdir, [seed], rows)
      finished.add((seed, method))
      scores = ' '.join(f'{k} {row[k]:.3f}' for k in results.METRICS if k in row)
      log.info('trial %d/%d seed %d %s: %s (%.1f s)', len(finished), len(wanted), seed, method, scores,
               row['seconds'])
  # Re-read: processes running other seeds in this workdir may have finished trials meanwhile.
  payload = write_outputs(config, dataset, workdir, read_all_trials(workdir), time.perf_counter() - t_start)
  log.info('table (%s):\n%s', workdir / 'table.md', (workdir / 'table.md').read_text())
  return payload

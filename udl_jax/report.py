"""report.html: one self-contained page per benchmark run, the file to open (or mail) after a run.

What the run was (data, protocol, seeds, methods, dtype, software), the seed-averaged table beside published
numbers, every trial, and the figures that say why a number is what it is: pretraining curves of all seeds,
each fine-tuning method's ACC / NMI / label changes per target update, confusion matrices in the Hungarian
order, a 2-D map of the embedding, and samples per cluster (clusters.png). Images are inlined as base64 PNGs
and the CSS is inline, so the page opens anywhere, offline, with no JavaScript. The figures are also kept as
PNG files in workdir/figures/.

Written at the end of every benchmark run (`benchmark.write_outputs`), by process 0 only. The figure work is
capped: the embedding map is made for one seed of one method, on at most `MAP_POINTS` points.
With `config.tensorboard`, the metrics.jsonl histories are also written as TensorBoard scalars under
workdir/tensorboard/seed_S/{ae,METHOD} (needs the `tensorboard` extra: tensorboardX).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from udl_jax import checkpoint, methods, models, parallel, plots, results, train
from udl_jax.errors import UserError

MAP_POINTS = 3000  # most points in the embedding map (t-SNE's time grows faster than linearly)

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
table.trials td:nth-child(2), table.trials th:nth-child(2) { text-align: left; }
td.best { font-weight: bold; } td.na { color: #999; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1.2em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
figure { margin: 1em 0 2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } p.note { color: #666; font-style: italic; }
"""


def write_report(workdir: Path, config, dataset) -> Path:
  """Writes workdir/report.html (and its figures under workdir/figures/) from the run's files; returns its path.

  Only process 0 does anything: the figures' embedding runs on its own devices, so the other processes of a
  multi-process run are not needed (and not waited for).
  """
  workdir = Path(workdir)
  path = workdir / 'report.html'
  if not parallel.is_main_process():
    return path
  summary = json.loads((workdir / 'summary.json').read_text())
  # trials.csv keeps every finished trial of the workdir; the report shows those of this command, as the summary.
  rows = [r for r in results.read_trials(workdir / 'trials.csv')
          if r['seed'] in summary['seeds'] and r['method'] in summary['methods']]
  run = _Run(workdir, config, dataset, summary, rows)
  sections = [_facts(run), _summary_table(run), _trials_table(run), _figures(run)] if rows else \
      [_facts(run), _note('No trial of this command has finished yet.')]
  page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(run.title)}</title>\n'
          f'<style>{_CSS}</style>\n</head>\n<body>\n<h1>{_e(run.title)}</h1>\n' + '\n'.join(sections) +
          '\n</body>\n</html>\n')
  results.write_atomic(path, page)
  if config.get('tensorboard', False):
    write_tensorboard(workdir)
  return path


class _Run:
  """What the sections share: the run's files read once, its seeds and methods in table order."""

  def __init__(self, workdir: Path, config, dataset, summary: dict, rows: list[dict]):
    self.workdir, self.config, self.dataset, self.summary, self.rows = workdir, config, dataset, summary, rows
    self.methods = list(summary['methods'])
    # The methods with a result on some seed: the others (every seed failed) have no labels to draw.
    self.scored = [m for m in self.methods if any(r['method'] == m for r in results.scored(rows))]
    self.seeds = sorted({r['seed'] for r in rows})
    self.labelled = dataset.y is not None
    self.title = f"{summary['dataset']}: {', '.join(results.METHOD_LABELS.get(m, m) for m in self.methods)}"

  @functools.cache
  def histories(self, name: str) -> dict[int, list[dict]]:
    """{seed: rows of seed_S/NAME/metrics.jsonl} for the seeds that have one."""
    found = {}
    for seed in self.seeds:
      path = self.workdir / f'seed_{seed}' / name / 'metrics.jsonl'
      if path.exists():
        found[seed] = results.read_jsonl(path)
    return found

  def best_seed(self, method: str) -> int:
    """The seed of `method`'s highest ACC (its first seed when the data has no labels), among its trials that
    have a result (a `scored` method)."""
    mine = [r for r in results.scored(self.rows) if r['method'] == method]
    return max(mine, key=lambda r: (r.get('acc') or 0.0, -r['seed']))['seed']

  def labels_path(self, method: str, seed: int) -> Path:
    return self.workdir / f'seed_{seed}' / f'{method}_labels.npz'

  def labels(self, method: str, seed: int) -> dict[str, np.ndarray]:
    with np.load(self.labels_path(method, seed)) as saved:
      return {k: saved[k] for k in saved.files}


def _e(text) -> str:
  return html.escape(str(text), quote=True)


def _table(header: list[str], body: list[list[str]], classes: list[list[str]] | None = None,
           table_class: str = 'summary') -> str:
  """An HTML table of already escaped cells; `classes` gives each body cell a CSS class ('' for none)."""
  head = ''.join(f'<th>{h}</th>' for h in header)
  lines = []
  for i, cells in enumerate(body):
    cls = classes[i] if classes else [''] * len(cells)
    lines.append('<tr>' + ''.join(f'<td class="{c}">{v}</td>' if c else f'<td>{v}</td>' for v, c in zip(cells, cls))
                 + '</tr>')
  return (f'<table class="{table_class}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + '\n'.join(lines) +
          '\n</tbody>\n</table>')


def _facts(run: _Run) -> str:
  s, c, env = run.summary, run.config, run.summary.get('environment', {})
  packages = ', '.join(f'{k} {v}' for k, v in env.get('packages', {}).items() if v)
  model = c.model
  facts = [
      ('dataset', f"{s['dataset']} ({s['n_samples']} images of {'x'.join(map(str, run.dataset.image_shape))}, "
                  f"{'labelled' if run.labelled else 'no labels'})"),
      ('clusters', c.n_clusters or run.dataset.num_classes),
      ('protocol', s['protocol'] + (f', {c.holdout_fraction:g} held out' if s['protocol'] == 'holdout' else '')),
      ('seeds', f"{len(s['seeds'])}: {', '.join(map(str, s['seeds']))}"),
      *([('INCOMPLETE', f"{s.get('missing_trials')} requested trials have not finished")]
        if s.get('complete') is False else []),
      ('methods', ', '.join(results.METHOD_LABELS.get(m, m) for m in run.methods)),
      ('model', f"{model.name}" + (f", dims {tuple(model.dims)}" if 'dims' in model else '')),
      ('pretraining', f"{c.pretrain.epochs} epochs, {c.pretrain.optimizer} lr {c.pretrain.learning_rate:g}, "
                      f"batch {c.pretrain.batch_size}"),
      ('dtype', c.get('dtype', 'float32')),
      ('wall time (this process)', f"{s.get('wall_seconds_this_process', 0.0):.1f} s"),
      ('device', f"{env.get('backend', '?')}: {env.get('device_count', '?')} x {env.get('device_kind', '?')}"),
      ('software', f"Python {env.get('python', '?')}; {packages}"),
      ('platform', env.get('platform', '?')),
  ]
  body = ''.join(f'<dt>{_e(k)}</dt><dd>{_e(v)}</dd>' for k, v in facts)
  return f'<h2>Run</h2>\n<dl class="facts">{body}</dl>'


def _summary_table(run: _Run) -> str:
  # Published figures are transductive scores on the whole dataset: nothing to compare a holdout run with.
  compare = run.summary['protocol'] == 'transductive' and any(
      results.published(run.summary['dataset'], m) for m in run.methods)
  body, classes = [], []
  for row in results.table_rows({m: run.summary['methods'][m] for m in run.methods}):
    cells = [_e(row['label'])] + [_e(c) for c in row['cells']] + [_e(row['seeds']), f"{row['seconds']:.1f}"]
    cls = [''] + ['best' if b else 'na' if c == 'n/a' else '' for c, b in zip(row['cells'], row['best'])] + ['', '']
    if compare:
      paper = results.published(run.summary['dataset'], row['method'])
      cells.append('' if paper is None else _e(f'{paper[0]:g} / {paper[1]:g} ({paper[2]})'))
      cls.append('')
    body.append(cells)
    classes.append(cls)
  header = ['method', 'ACC', 'NMI', 'ARI', 'seeds', 'time / seed (s)'] + (['published ACC / NMI'] if compare else [])
  note = '' if run.labelled else \
      '<p class="note">The data has no labels: ACC, NMI and ARI cannot be computed (n/a).</p>\n'
  lines = ['Best mean of each metric in bold.' if run.labelled else ''] + \
      results.table_notes(run.summary['methods']).split('\n')
  return f'<h2>Results</h2>\n{note}' + _table(header, body, classes) + ''.join(
      f'\n<p>{_e(line)}</p>' for line in lines if line)


def _trials_table(run: _Run) -> str:
  fmt = lambda v, spec: '' if v is None else format(v, spec)  # noqa: E731
  body = [[str(r['seed']), _e(results.METHOD_LABELS.get(r['method'], r['method']))] +
          [fmt(r.get(k), '.3f') for k in results.METRICS] +
          [fmt(r.get('seconds'), '.1f'), fmt(r.get('pretrain_seconds'), '.1f'), fmt(r.get('iterations'), '.0f'),
           _e(r.get('failed') or '')]
          for r in sorted(run.rows, key=lambda r: (r['seed'], run.methods.index(r['method'])))]
  header = ['seed', 'method', 'ACC', 'NMI', 'ARI', 'seconds', 'pretraining (s)', 'iterations', 'failed']
  return '<h2>Trials</h2>\n' + _table(header, body, table_class='trials')


def _img(path: Path, alt: str) -> str:
  data = base64.b64encode(path.read_bytes()).decode('ascii')
  return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _figure(path: Path, caption: str) -> str:
  return f'<figure>{_img(path, caption)}<figcaption>{_e(caption)}</figcaption></figure>'


def _note(text: str) -> str:
  return f'<p class="note">{_e(text)}</p>'


class _FigureCache:
  """workdir/figures/: each figure is redrawn only when a file it is drawn from (or the plotting code) changed.

  A resumed run with nothing left to do, or a copy of a finished workdir, re-renders its report in a second
  instead of repeating the t-SNE. figures/index.json keeps each figure's key (its inputs' paths relative to the
  workdir, sizes and modification times) and caption; figures no longer in the report are removed.
  """

  def __init__(self, workdir: Path):
    self.workdir, self.dir = workdir, workdir / 'figures'
    try:
      self.old = json.loads((self.dir / 'index.json').read_text())
    except (OSError, ValueError):
      self.old = {}
    self.new = {}

  def _key(self, inputs: list[Path]) -> list:
    stamp = lambda p: [p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns]  # noqa: E731
    code = [stamp(Path(f)) for f in (plots.__file__, __file__)]
    return code + [[str(p.relative_to(self.workdir)), *stamp(p)] for p in inputs] + [MAP_POINTS]

  def figure(self, name: str, inputs: list[Path], draw) -> str:
    """The <figure> of `name`, drawn by `draw(path) -> caption` unless the saved one is current."""
    path, key = self.dir / name, self._key(inputs)
    entry = self.old.get(name)
    caption = entry['caption'] if entry and entry.get('key') == key and path.exists() else draw(path)
    self.new[name] = {'key': key, 'caption': caption}
    return _figure(path, caption)

  def save(self) -> None:
    for name in set(self.old) - set(self.new):
      (self.dir / name).unlink(missing_ok=True)
    results.write_json(self.dir / 'index.json', self.new)


def _history_steps(run: _Run) -> dict[str, str]:
  """{method: what its history counts} for the clustering methods that left one: a fine-tuner's iterations, a
  method that trains its own model (vade) its epochs."""
  return {m: 'iteration' if any('iteration' in row for rows in run.histories(m).values() for row in rows)
          else 'epoch' for m in run.methods if m not in methods.BASELINES and run.histories(m)}


def _figures(run: _Run) -> str:
  out, cache = [], _FigureCache(run.workdir)
  label = lambda m: results.METHOD_LABELS.get(m, m)  # noqa: E731
  metrics_files = lambda name: [run.workdir / f'seed_{s}' / name / 'metrics.jsonl'  # noqa: E731
                                for s in run.histories(name)]

  out.append('<h3>Autoencoder pretraining</h3>')
  if run.histories('ae'):
    def draw_pretraining(path):
      plots.pretraining_curves(run.histories('ae'), path, title='Autoencoder pretraining loss per seed')
      return 'Training loss per epoch, one line per seed (dashed: validation loss).'
    out.append(cache.figure('pretraining.png', metrics_files('ae'), draw_pretraining))
  else:
    out.append(_note('No autoencoder was trained in this run (only raw-pixel KMeans).'))

  tuned = _history_steps(run)
  if tuned:
    out.append('<h3>Clustering training</h3>')
    if not run.labelled:
      out.append(_note('No labels: ACC and NMI are not tracked; the curves show the loss (and a fine-tuner\'s '
                       'label changes).'))
  for method, step in tuned.items():
    def draw_curves(path, method=method, step=step):
      plots.fine_tuning_curves(run.histories(method), path, title=f'{label(method)} per seed', step=step)
      if step == 'epoch':
        return (f'{label(method)}: its loss per epoch, and ACC / NMI (when labelled) at its start (epoch 0) and '
                'every checkpoint.')
      return (f'{label(method)}: per target update, ACC / NMI (when labelled), the share of labels that changed '
              '(it stops below cluster.tol) and the clustering loss.')
    out.append(cache.figure(f'{method}_curves.png', metrics_files(method), draw_curves))

  out.append('<h3>Confusion matrices</h3>')
  if run.labelled:
    for method in run.scored:
      seed = run.best_seed(method)

      def draw_confusion(path, method=method, seed=seed):
        saved = run.labels(method, seed)
        plots.confusion_matrix(run.dataset.y[saved['index']], saved['labels'], path,
                               title=f'{label(method)}, seed {seed}')
        return (f'{label(method)}, seed {seed} (its best ACC): true classes against clusters, the columns in the '
                'order of the Hungarian matching.')
      out.append(cache.figure(f'{method}_confusion.png', [run.labels_path(method, seed)], draw_confusion))
  else:
    out.append(_note('The data has no labels: there is no confusion matrix to draw.'))

  out.append('<h3>Embedding</h3>')
  out.append(_embedding_section(run, cache))
  cache.save()

  out.append('<h3>Samples per cluster</h3>')
  clusters = run.workdir / 'clusters.png'
  out.append(_figure(clusters, 'Samples of each cluster of the best deep run (clusters.png), most confident first.')
             if clusters.exists() else _note('clusters.png was not written.'))
  return '<h2>Figures</h2>\n' + '\n'.join(out)


def _embedding_section(run: _Run, cache: _FigureCache) -> str:
  """The embedding map of `_map_choice`'s trial, or a note saying why there is none."""
  if not run.scored:  # e.g. every seed's autoencoder collapsed
    return _note('No embedding map: no trial of this run has a result (trials.csv says why each failed).')
  method, seed = _map_choice(run)
  params = [p for p in (run.workdir / f'seed_{seed}' / d / 'params' for d in (method, 'ae')) if p.exists()]
  if method == 'kmeans' or params:
    return cache.figure('embedding.png', [run.labels_path(method, seed)] + params,
                        lambda path: _embedding_figure(run, method, seed, path))
  # e.g. a workdir brought back from another machine without its saved parameters
  return _note(f'No embedding map: seed {seed} has no saved parameters in this workdir '
               f'(seed_{seed}/ae/params), so its embedding cannot be computed.')


def _map_choice(run: _Run) -> tuple[str, int]:
  """The method and seed whose embedding is mapped: the method with the best mean ACC among those with a
  learned embedding (the last of them when unlabelled: fine-tuners come after the baselines), at its best seed;
  raw-pixel KMeans only when it is all the run has."""
  deep = [m for m in run.scored if methods.needs_autoencoder(m)] or run.scored
  acc = lambda m: run.summary['methods'][m].get('acc', {}).get('mean', -1.0)  # noqa: E731
  method = max(reversed(deep), key=acc) if run.labelled else deep[-1]
  return method, run.best_seed(method)


def _embedding_figure(run: _Run, method: str, seed: int, path: Path) -> str:
  """The map of one seed's final embedding (the method's fine-tuned encoder when it saved one, else the
  pretrained autoencoder's; raw pixels for KMeans) on at most MAP_POINTS seeded-random evaluation points."""
  saved = run.labels(method, seed)
  index, clusters = saved['index'], saved['labels']
  keep = np.sort(np.random.default_rng(seed).choice(len(index), size=min(len(index), MAP_POINTS), replace=False))
  index, clusters = index[keep], clusters[keep]
  seed_dir = run.workdir / f'seed_{seed}'
  if method == 'kmeans':
    z, what = run.dataset.flat[index], 'raw pixels'
  else:
    # Read by this process alone: the others of a multi-process job do not draw the report (and may have left).
    load = functools.partial(checkpoint.load_tree, local=True)
    params = load(seed_dir / method / 'params') if (seed_dir / method / 'params').exists() else None
    encoder = params['ae'] if isinstance(params, dict) and 'ae' in params else None
    what = f"{results.METHOD_LABELS.get(method, method)}'s fine-tuned encoder" if encoder is not None else \
        'the pretrained encoder'
    encoder = encoder if encoder is not None else load(seed_dir / 'ae' / 'params')
    model = models.from_config(run.config, run.dataset.image_shape)
    x = models.model_input(run.config.model.name, run.dataset.x[index])
    z = np.asarray(train.embed(model, encoder, x, parallel.single_device_mesh()), np.float32)
  points, projection = plots.project_2d(z, seed)
  label = results.METHOD_LABELS.get(method, method)
  plots.embedding_map(points, clusters, path, None if run.dataset.y is None else run.dataset.y[index],
                      title=f'{label}, seed {seed}: {what}', projection=projection)
  sampled = f'{len(index)} of {len(saved["index"])}' if len(index) < len(saved['index']) else f'all {len(index)}'
  return (f'{projection} of {what} (seed {seed}, {sampled} evaluation points), coloured by {label} cluster'
          + (' and by true class.' if run.labelled else '.'))


def require_tensorboard():
  """tensorboardX's SummaryWriter, or a UserError saying how to install it: call it when the config is checked
  (`config.tensorboard` set), so that a missing package fails the run's first second, not its last."""
  try:
    from tensorboardX import SummaryWriter  # noqa: PLC0415  (the optional `tensorboard` extra)
  except ImportError as e:
    raise UserError('config.tensorboard is set but tensorboardX is not installed: pip install -e ".[tensorboard]" '
                    '(or set --config.tensorboard=False)') from e
  return SummaryWriter


def write_tensorboard(workdir: Path) -> Path:
  """workdir/tensorboard/seed_S/{ae,METHOD}: every metrics.jsonl history as TensorBoard scalars (step: epoch or
  iteration). Rewritten whole each time, as the report (appending would repeat a resumed run's events): written
  into a temporary sibling folder that then replaces the old one."""
  summary_writer = require_tensorboard()
  workdir = Path(workdir)
  target, token = workdir / 'tensorboard', f'{os.getpid()}.{time.monotonic_ns()}'
  staging, aside = workdir / f'.tensorboard.{token}.tmp', workdir / f'.tensorboard.{token}.old'
  try:
    for history_path in sorted(workdir.glob('seed_*/*/metrics.jsonl')):
      writer = summary_writer(str(staging / history_path.parent.parent.name / history_path.parent.name))
      for i, row in enumerate(results.read_jsonl(history_path)):
        step = int(row.get('epoch', row.get('iteration', i)))
        for key, value in row.items():
          if key not in ('epoch', 'iteration') and isinstance(value, (int, float)) and np.isfinite(value):
            writer.add_scalar(key, value, step)
      writer.close()
    staging.mkdir(exist_ok=True)  # (a workdir without histories: an empty folder)
    if target.exists():
      target.rename(aside)
    try:
      staging.rename(target)
    except OSError:
      if not target.is_dir():  # (else a process sharing the workdir put its own, equal copy there first)
        raise
  finally:
    for leftover in (staging, aside):
      shutil.rmtree(leftover, ignore_errors=True)
  return target

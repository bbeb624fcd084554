"""Trial rows -> seed-averaged tables (trials.csv, summary.json, table.md), every file written atomically.

A crash or kill never leaves a half-written table: each file is written to a temporary sibling and renamed.
In a multi-process (multi-host) run only process 0 writes: the other processes' writes are no-ops.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from udl_jax import parallel

METRICS = ('acc', 'nmi', 'ari')
NUMERIC_FIELDS = ('acc', 'nmi', 'ari', 'seconds', 'pretrain_seconds', 'iterations')
# `failed`: why a trial has no result (its training diverged, its autoencoder collapsed), empty for every trial
# that has one.
TRIAL_FIELDS = ('seed', 'method', 'protocol', *NUMERIC_FIELDS, 'failed')
METHOD_LABELS = {'kmeans': 'KMeans (raw pixels)', 'ae_kmeans': 'AE + KMeans', 'ae_gmm': 'AE + GMM', 'n2d': 'N2D',
                 'dec': 'DEC', 'idec': 'IDEC', 'dec_da': 'DEC-DA', 'idec_da': 'IDEC-DA', 'dcec': 'DCEC', 'dcn': 'DCN',
                 'dkm': 'DKM', 'vade': 'VaDE'}


def write_atomic(path: str | Path, content: str | bytes) -> None:
  """Writes a temporary sibling, then renames it over `path`; only process 0 of a multi-process run writes."""
  if not parallel.is_main_process():
    return
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  umask = os.umask(0)
  os.umask(umask)
  os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
  with os.fdopen(fd, 'wb') as f:
    f.write(content.encode() if isinstance(content, str) else content)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str | Path, obj) -> None:
  write_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + '\n')


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
  write_atomic(path, ''.join(json.dumps(r, default=_jsonable) + '\n' for r in rows))


def write_npz(path: str | Path, **arrays) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_atomic(path, buf.getvalue())


def _jsonable(value):
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def read_jsonl(path: str | Path) -> list[dict]:
  return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_trials(path: str | Path) -> list[dict]:
  path = Path(path)
  if not path.exists():
    return []
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  for r in rows:
    r['seed'] = int(r['seed'])
    for key in NUMERIC_FIELDS:
      r[key] = float(r[key]) if r.get(key) not in (None, '') else None
    r['failed'] = r.get('failed') or None  # (records written before the column have none)
  return rows


def scored(rows: list[dict]) -> list[dict]:
  """The trials that have a result: a failed trial (diverged, collapsed) has no scores and no saved labels."""
  return [r for r in rows if not r.get('failed')]


def write_trials(path: str | Path, rows: list[dict]) -> None:
  buf = io.StringIO()
  writer = csv.DictWriter(buf, TRIAL_FIELDS, extrasaction='ignore', lineterminator='\n')
  writer.writeheader()
  for r in sorted(rows, key=lambda r: (r['seed'], list(METHOD_LABELS).index(r['method'])
                                       if r['method'] in METHOD_LABELS else 99, r['method'])):
    writer.writerow({k: ('' if r.get(k) is None else r[k]) for k in TRIAL_FIELDS})
  write_atomic(path, buf.getvalue())


def summarize(rows: list[dict], methods: list[str]) -> dict:
  """{method: {metric: {mean, std, min, max, n}}} over the seeds that have a result, std the sample standard
  deviation, and `failed`: how many seeds failed (diverged, collapsed) instead, when any did."""
  out = {}
  for method in methods:
    every = [r for r in rows if r['method'] == method]
    if not every:
      continue
    mine = scored(every)
    out[method] = {'failed': len(every) - len(mine)} if len(mine) < len(every) else {}
    for key in METRICS + ('seconds', 'pretrain_seconds', 'iterations'):
      values = np.asarray([r[key] for r in mine if r.get(key) is not None], np.float64)
      if values.size:
        out[method][key] = {'mean': float(values.mean()), 'std': float(values.std(ddof=1)) if values.size > 1
                            else 0.0, 'min': float(values.min()), 'max': float(values.max()), 'n': int(values.size)}
  return out


def table_rows(summary: dict) -> list[dict]:
  """The seed-averaged table as data, one dict per method: label, cells (ACC / NMI / ARI text: mean ± std, the
  value alone for one seed, 'n/a' without labels or results), best (whether each cell holds the best mean),
  seeds (the number with a result, and 'of N (F failed)' when some failed), seconds (the method's own time per
  seed: the pretraining the deep methods share is not in it, `table_notes` states it once). What
  `markdown_table` and the HTML report show."""
  best = {m: max((s[m]['mean'] for s in summary.values() if m in s), default=None) for m in METRICS}
  rows = []
  for method, s in summary.items():
    cells, is_best = [], []
    for m in METRICS:
      if m not in s:
        cells.append('n/a')
        is_best.append(False)
        continue
      # One seed has no spread to show: the value alone, not a misleading ± 0.000.
      cells.append(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" if s[m]['n'] > 1 else f"{s[m]['mean']:.3f}")
      is_best.append(bool(np.isclose(s[m]['mean'], best[m])))
    n = max((s[m]['n'] for m in METRICS if m in s), default=s.get('seconds', {}).get('n', 0))
    failed = s.get('failed', 0)
    seconds = s.get('seconds', {}).get('mean', 0.0)
    rows.append({'method': method, 'label': METHOD_LABELS.get(method, method), 'cells': cells, 'best': is_best,
                 'seeds': f'{n} of {n + failed} ({failed} failed)' if failed else str(n), 'seconds': seconds})
  return rows


def markdown_table(summary: dict) -> str:
  """Methods as rows, mean ± std of ACC / NMI / ARI as columns (the value alone for one seed), best in bold."""
  lines = ['| method | ACC | NMI | ARI | seeds | time / seed (s) |', '| --- | --- | --- | --- | --- | --- |']
  for row in table_rows(summary):
    cells = [f'**{c}**' if b else c for c, b in zip(row['cells'], row['best'])]
    lines.append(f"| {row['label']} | {' | '.join(cells)} | {row['seeds']} | {row['seconds']:.1f} |")
  return '\n'.join(lines) + '\n'


def table_notes(summary: dict) -> str:
  """The lines under a table: what ± means, the metrics' conventions, and the shared pretraining time."""
  pretrain = [s['pretrain_seconds']['mean'] for s in summary.values() if 'pretrain_seconds' in s]
  notes = ['± is the sample standard deviation over seeds. NMI uses arithmetic-mean normalisation '
           "(scikit-learn's default); ACC is the best one-to-one cluster-to-class matching (Hungarian)."]
  if any(s.get('failed') for s in summary.values()):
    notes.append('A failed trial (its loss became non-finite, or the autoencoder it starts from learned nothing) '
                 'has no result: the means and spreads are over the seeds that have one; trials.csv says why each '
                 'failed.')
  if pretrain:
    notes.append(f'Time / seed counts each method alone; the autoencoder pretraining that every deep method '
                 f'starts from took {max(pretrain):.1f} s per seed more, once.')
  return '\n' + '\n'.join(notes) + '\n'


def unfinished(summary: dict) -> str | None:
  """Why a benchmark summary lacks trials its command asked for, or None when it has them all."""
  if 'complete' in summary:  # (a seed whose trial diverged has finished it: it is recorded as failed)
    return None if summary['complete'] else f"{summary.get('missing_trials')} of its requested trials have not run"
  seeds = len(summary.get('seeds', []))  # summaries written before 'complete': every method on every seed
  short = [m for m, s in summary.get('methods', {}).items()
           if max((s[k]['n'] for k in METRICS if k in s), default=seeds) < seeds]
  return f"{', '.join(short)} ran on fewer than its {seeds} seeds" if short else None


# Published ACC / NMI to set beside measured ones: {(column, method): (ACC, NMI, source)}, columns as in
# results/README.md's cross-method table (USPS is DEC-keras's table, which that page shows apart).
PUBLISHED_BY_METHOD = {
    ('MNIST-70k', 'kmeans'): (0.53, 0.50, 'DEC-keras'), ('MNIST-70k', 'ae_kmeans'): (0.88, 0.81, 'DEC-keras'),
    ('MNIST-70k', 'dec'): (0.91, 0.87, 'DEC-keras'), ('MNIST-70k', 'idec'): (0.881, 0.867, 'IDEC paper'),
    ('MNIST-70k', 'n2d'): (0.979, 0.942, 'N2D paper'), ('MNIST-70k', 'dcn'): (0.83, 0.81, 'DCN paper'),
    ('MNIST-70k', 'dkm'): (0.840, 0.796, 'DKM paper'), ('MNIST-test', 'n2d'): (0.948, 0.882, 'N2D paper'),
    ('Fashion-70k', 'kmeans'): (0.47, 0.51, 'DEC-keras'), ('Fashion-70k', 'ae_kmeans'): (0.61, 0.64, 'DEC-keras'),
    ('Fashion-70k', 'dec'): (0.62, 0.65, 'DEC-keras'), ('Fashion-70k', 'n2d'): (0.672, 0.684, 'N2D paper'),
    ('MNIST-70k', 'dec_da'): (0.985, 0.961, 'DEC-DA paper'), ('MNIST-test', 'dec_da'): (0.980, 0.950, 'DEC-DA paper'),
    ('Fashion-70k', 'dec_da'): (0.586, 0.636, 'DEC-DA paper'), ('MNIST-70k', 'dcec'): (0.889, 0.885, 'DCEC paper'),
    ('USPS', 'kmeans'): (0.67, 0.63, 'DEC-keras'), ('USPS', 'ae_kmeans'): (0.71, 0.68, 'DEC-keras'),
    ('USPS', 'dec'): (0.76, 0.79, 'DEC-keras'),
}
# Which published column a dataset's transductive run compares with.
PUBLISHED_COLUMN = {'mnist': 'MNIST-70k', 'mnist_test': 'MNIST-test', 'fashion_mnist': 'Fashion-70k', 'usps': 'USPS'}


def published(dataset: str, method: str) -> tuple[float, float, str] | None:
  """(ACC, NMI, source) published for `method` on the whole of `dataset`, or None."""
  return PUBLISHED_BY_METHOD.get((PUBLISHED_COLUMN.get(dataset), method))


def environment() -> dict:
  """Package versions and the device, recorded beside every table."""
  import jax
  packages = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'scikit-learn', 'numpy', 'scipy')
  versions = {}
  for p in packages:
    try:
      versions[p] = metadata.version(p)
    except metadata.PackageNotFoundError:
      versions[p] = None
  devices = jax.devices()
  return {'python': platform.python_version(), 'packages': versions, 'platform': platform.platform(),
          'backend': jax.default_backend(), 'device_kind': devices[0].device_kind, 'device_count': len(devices),
          'cpu_count': os.cpu_count(), 'cpus_usable': len(os.sched_getaffinity(0))
          if hasattr(os, 'sched_getaffinity') else os.cpu_count(), 'xla_flags': os.environ.get('XLA_FLAGS', '')}

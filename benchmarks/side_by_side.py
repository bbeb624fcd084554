"""One table of several finished runs of the same methods, side by side: quality with its standard error, and the
wall time of each phase per seed. For udl_jax against its peers (benchmarks/dec_keras.py) on the same seeds.

  python -m benchmarks.side_by_side --title="MNIST-test, DEC-keras's settings, seeds 0-4" \
      --runs="DEC-keras=runs/dec_keras_mnist_test,udl_jax=results/mnist_test" --methods=ae_kmeans,dec \
      --reference=DEC-keras --out=results/dec_keras_side_by_side/mnist_test.md

Each run folder holds trials.csv (udl_jax's format, which the peer runners write too) and summary.json. Only the
seeds every run has are compared. "vs reference" is the difference of the means in units of their combined
standard error, sqrt(se_a^2 + se_b^2): |d| <= 1 is "within one standard error".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import app, flags
from scipy import stats

from udl_jax import results

_RUNS = flags.DEFINE_list('runs', None, 'label=folder pairs, in the order of the table.', required=True)
_METHODS = flags.DEFINE_list('methods', ['ae_kmeans', 'dec'], 'Methods to compare.')
_REFERENCE = flags.DEFINE_string('reference', None, 'The label the others are compared with.')
_TITLE = flags.DEFINE_string('title', '', 'The heading of the table.')
_OUT = flags.DEFINE_string('out', None, 'Markdown file to write (and .json beside it).', required=True)
_TIMING_SEEDS = flags.DEFINE_list('timing_seeds', [], 'Seeds whose times enter the time columns and the ratio '
                                   '(default: every compared seed), e.g. to leave out seeds that shared their '
                                   'core with other work.')
_PAIRED = flags.DEFINE_bool('paired', False, 'The runs share each seed\'s start (dec_keras --start_from): compare '
                            'seed by seed, with the paired t-test and the standard error of the differences.')
_TIMED_ELSEWHERE = flags.DEFINE_list('timed_elsewhere', [], 'Labels of runs timed on another machine: their times '
                                     'are shown in brackets and left out of the time ratio.')


def _stats(values: list[float]) -> dict:
  v = np.asarray(values, np.float64)
  std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
  return {'mean': float(v.mean()), 'std': std, 'se': std / np.sqrt(len(v)), 'n': len(v)}


def compare(runs: dict[str, list[dict]], methods: list[str], timing_seeds: list[int] | None = None) -> dict:
  """{label: {method: {metric: stats, 'pretrain_seconds', 'seconds', 'iterations', 'values'}}} over the common
  seeds; the two times over `timing_seeds` only, when given."""
  seeds = sorted(set.intersection(*({r['seed'] for r in rows if r['method'] in methods} for rows in runs.values())))
  if not seeds:
    raise app.UsageError('the runs have no seed in common')
  timing_seeds = sorted(timing_seeds) if timing_seeds else seeds
  if not set(timing_seeds) <= set(seeds):
    raise app.UsageError(f'--timing_seeds {timing_seeds} must be among the compared seeds {seeds}')
  timed = lambda picked, k: _stats([r[k] for r in picked if r['seed'] in timing_seeds])
  out = {}
  for label, rows in runs.items():
    out[label] = {}
    for m in methods:
      picked = [r for r in rows if r['method'] == m and r['seed'] in seeds]
      if len(picked) != len(seeds):
        raise app.UsageError(f'{label} lacks {m} for some of seeds {seeds}')
      entry = {k: _stats([r[k] for r in picked]) for k in results.METRICS + ('iterations',)
               if all(r.get(k) is not None for r in picked)}
      entry['values'] = {k: [r[k] for r in sorted(picked, key=lambda r: r['seed'])] for k in results.METRICS}
      entry['seconds'] = timed(picked, 'seconds')
      if all(r.get('pretrain_seconds') is not None for r in picked):
        entry['pretrain_seconds'] = timed(picked, 'pretrain_seconds')
      out[label][m] = entry
  return {'seeds': seeds, 'timing_seeds': timing_seeds, 'runs': out}


def _fmt(s: dict) -> str:
  return f"{s['mean']:.3f} ± {s['std']:.3f} ({s['se']:.3f})"


def _difference(a: dict, b: dict, k: str, paired: bool) -> str:
  """mean(a) - mean(b) in standard errors, with the t-test's p: Welch's on two samples, or the paired test on the
  seed-by-seed differences (their own standard error)."""
  d = a[k]['mean'] - b[k]['mean']
  if paired:
    diffs = np.subtract(a['values'][k], b['values'][k])
    se = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    p = stats.ttest_rel(a['values'][k], b['values'][k]).pvalue if se else float('nan')
  else:
    se = np.hypot(a[k]['se'], b[k]['se'])
    p = stats.ttest_ind(a['values'][k], b['values'][k], equal_var=False).pvalue
  digits = 4 if paired else 3  # from one start the differences are small
  return f'{d:+.{digits}f} ({d / se:+.1f} SE, p {p:.2f})' if se else f'{d:+.{digits}f}'


def markdown(table: dict, reference: str | None, title: str, timed_elsewhere: tuple[str, ...] = (),
             paired: bool = False) -> str:
  seeds = table['seeds']
  lines = [f'{title}' if title else '', '',
           f'Seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}). Each cell: mean ± standard deviation over the seeds '
           '(standard error of the mean). NMI with arithmetic-mean normalisation. Times are wall seconds per seed'
           + (f" (mean over seeds {', '.join(map(str, table['timing_seeds']))} only)"
              if table.get('timing_seeds', seeds) != seeds else '')
           + (', in brackets where taken on another machine.' if timed_elsewhere else '.'),
           '', '| run | method | ACC | NMI | ARI | pretraining (s) | method (s) | iterations |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for label, by_method in table['runs'].items():
    for m, e in by_method.items():
      bracket = (lambda t: f'({t})') if label in timed_elsewhere else (lambda t: t)
      pre = bracket(f"{e['pretrain_seconds']['mean']:.0f}") if 'pretrain_seconds' in e else '—'
      its = f"{e['iterations']['mean']:.0f}" if 'iterations' in e else '—'
      own = bracket(f"{e['seconds']['mean']:.1f}")
      lines.append(f"| {label} | {results.METHOD_LABELS.get(m, m)} | {_fmt(e['acc'])} | {_fmt(e['nmi'])} | "
                   f"{_fmt(e['ari'])} | {pre} | {own} | {its} |")
  if reference:
    lines += ['', f'Difference from {reference}, seed by seed from the same start: mean of the differences, in '
              'their standard error, and the paired two-sided t-test p-value.' if paired else
              f'Difference from {reference}: mean - mean_ref, in combined standard errors (mean - mean_ref) / '
              "sqrt(se² + se_ref²), and Welch's two-sided t-test p-value.",
              '', '| run | method | ACC | NMI | ARI | ' + ('the method\'s own time' if paired else
                                                         'time / seed, pretraining + all methods') + f' (× {reference}) |',
              '| --- | --- | --- | --- | --- | --- |']
    ref = table['runs'][reference]
    ref_time = _seed_time(ref)
    for label, by_method in table['runs'].items():
      if label == reference:
        continue
      for m, e in by_method.items():
        cells = [_difference(e, ref[m], k, paired) for k in results.METRICS]
        own, ref_own = (_seed_time(by_method), ref_time) if not paired else (e['seconds']['mean'],
                                                                             ref[m]['seconds']['mean'])
        # (a reference time under 0.05 s, e.g. a k-means start loaded rather than run, gives no ratio)
        ratio = f'{own / ref_own:.2f}' if ref_own >= 0.05 and label not in timed_elsewhere else '—'
        lines.append(f"| {label} | {results.METHOD_LABELS.get(m, m)} | {' | '.join(cells)} | {ratio} |")
  return '\n'.join(lines).lstrip() + '\n'


def _seed_time(by_method: dict) -> float:
  """Mean wall seconds per seed of the whole pipeline: pretraining once plus every compared method."""
  pre = next((e['pretrain_seconds']['mean'] for e in by_method.values() if 'pretrain_seconds' in e), 0.0)
  return pre + sum(e['seconds']['mean'] for e in by_method.values())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  runs, environments = {}, {}
  for item in _RUNS.value:
    label, _, folder = item.partition('=')
    path = Path(folder)
    if not (path / 'trials.csv').exists():
      raise app.UsageError(f'{path} has no trials.csv')
    runs[label] = results.read_trials(path / 'trials.csv')
    summary = path / 'summary.json'
    environments[label] = {'folder': folder, **(json.loads(summary.read_text()).get('environment', {})
                                                if summary.exists() else {})}
  if _REFERENCE.value and _REFERENCE.value not in runs:
    raise app.UsageError(f'--reference={_REFERENCE.value} is not one of the runs ({", ".join(runs)})')
  table = compare(runs, _METHODS.value, [int(s) for s in _TIMING_SEEDS.value])
  out = Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  results.write_json(out.with_suffix('.json'), {**table, 'environments': environments})
  results.write_atomic(out, markdown(table, _REFERENCE.value, _TITLE.value, tuple(_TIMED_ELSEWHERE.value),
                                     _PAIRED.value))
  print(out.read_text())


if __name__ == '__main__':
  app.run(main)

"""The results page's computed sections: numbers come from the committed trials, differences computed, not typed."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import render_results
from udl_jax import results


def _write_trials(folder, nmi_by_seed_method):
  folder.mkdir(parents=True)
  with (folder / 'trials.csv').open('w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['seed', 'method', 'protocol', 'acc', 'nmi', 'ari', 'seconds', 'pretrain_seconds', 'iterations'])
    for (seed, method), nmi in nmi_by_seed_method.items():
      writer.writerow([seed, method, 'transductive', 0.5, nmi, 0.4, 1.0, 2.0, ''])


def test_precision_section_pairs_seeds_and_subtracts_float32(tmp_path, monkeypatch):
  _write_trials(tmp_path / 'f32', {(0, 'ae_kmeans'): 0.80, (0, 'dec'): 0.85, (1, 'ae_kmeans'): 0.70,
                                   (1, 'dec'): 0.90, (2, 'dec'): 0.50})
  _write_trials(tmp_path / 'bf16', {(0, 'ae_kmeans'): 0.81, (0, 'dec'): 0.83, (1, 'ae_kmeans'): 0.70,
                                    (1, 'dec'): 0.92})
  monkeypatch.setattr(render_results, 'RESULTS', tmp_path)
  monkeypatch.setattr(render_results, 'PRECISION_PAIRS', (('f32', 'bf16', 'here'), ('f32', 'missing', 'absent')))
  rows = [line for line in render_results.precision_section().splitlines() if line.startswith('| [here]')
          or line.startswith('| here')]
  assert rows == [
      '| [here](bf16/COMMAND.md) | 0 | 0.800 / 0.810 (+0.010) | 0.850 / 0.830 (-0.020) |',
      '| [here](bf16/COMMAND.md) | 1 | 0.700 / 0.700 (+0.000) | 0.900 / 0.920 (+0.020) |',
      '| here | mean | 0.750 / 0.755 (+0.005) | 0.875 / 0.875 (+0.000) |',  # seed 2 has no bfloat16 twin
  ]
  assert 'absent' not in render_results.precision_section()


def test_precision_section_is_empty_without_pairs(tmp_path, monkeypatch):
  monkeypatch.setattr(render_results, 'RESULTS', tmp_path)
  assert render_results.precision_section() == ''


def _write_cross_runs(tmp_path):
  """Two committed runs of one column: `a`, and `b` with one method `a` lacks (and a DEC that `a` supplies)."""
  stats = lambda mean, std, n: {'mean': mean, 'std': std, 'n': n}
  (tmp_path / 'a').mkdir()
  (tmp_path / 'a' / 'summary.json').write_text(json.dumps({'methods': {
      'dec': {'acc': stats(0.9, 0.01, 3), 'nmi': stats(0.85, 0.02, 3), 'seconds': stats(12.4, 1.0, 3)},
      'n2d': {'acc': stats(0.95, 0.0, 3), 'nmi': stats(0.9, 0.005, 3), 'seconds': stats(3.0, 0.1, 3)}}}))
  (tmp_path / 'a' / 'COMMAND.md').write_text('```bash\npython -m experiments.benchmark\n```\n')
  (tmp_path / 'b').mkdir()  # a later run of the column: supplies only what the earlier one lacks
  (tmp_path / 'b' / 'summary.json').write_text(json.dumps({'methods': {
      'dec': {'acc': stats(0.1, 0.0, 3), 'nmi': stats(0.1, 0.0, 3), 'seconds': stats(1.0, 0.0, 3)},
      'ae_gmm': {'acc': stats(0.8, 0.0, 3), 'nmi': stats(0.7, 0.01, 3), 'seconds': stats(2.0, 0.0, 3)}}}))
  (tmp_path / 'b' / 'COMMAND.md').write_text('```bash\npython -m experiments.benchmark '
                                             '--config=configs/benchmark.py:dataset=mnist,reference=n2d\n```\n')


def test_cross_method_table_reads_each_runs_summary_and_sets_the_published_figure_beside_it(tmp_path, monkeypatch):
  _write_cross_runs(tmp_path)
  monkeypatch.setattr(render_results, 'RESULTS', tmp_path)
  monkeypatch.setattr(render_results, 'CROSS_COLUMNS', {'MNIST-70k': ('missing', 'a', 'b'), 'other': ('missing',)})
  monkeypatch.setattr(render_results, 'GPU_RUNS', {'b': 'an H200'})
  lines = render_results.cross_method_section(render_results._cross_method_columns()).splitlines()
  assert any(line.endswith('its command): MNIST-70k: `a` (N2D, DEC), `b` (AE + GMM; `reference=n2d`).')
             for line in lines), lines
  assert '| AE + GMM | 0.800 / 0.700 ± 0.010 (3 seeds, 2 s on an H200) | - |' in lines  # b ran on a GPU
  assert '| DEC | 0.900 / 0.850 ± 0.020 (3 seeds, 12 s) [0.91 / 0.87 DEC-keras] | - |' in lines
  assert '| N2D | 0.950 / 0.900 ± 0.005 (3 seeds, 3 s) [0.979 / 0.942 N2D paper] | - |' in lines
  assert not any(line.startswith('| IDEC') for line in lines)  # no run has it


def test_readme_block_shows_the_default_benchmarks_table_then_every_method_on_every_dataset(tmp_path, monkeypatch):
  _write_cross_runs(tmp_path)
  (tmp_path / 'digits').mkdir()
  (tmp_path / 'digits' / 'table.md').write_text('| method | ACC |\n| --- | --- |\n| DEC | 0.801 |\n')
  (tmp_path / 'digits' / 'COMMAND.md').write_text('```bash\npython -m experiments.benchmark\n```\n')
  monkeypatch.setattr(render_results, 'RESULTS', tmp_path)
  monkeypatch.setattr(render_results, 'CROSS_COLUMNS', {'MNIST-70k': ('a', 'b')})
  block = render_results.readme_block(render_results._cross_method_columns())
  default_table, cross_table = block.index('| DEC | 0.801 |'), block.index('| method | MNIST-70k |')
  assert block.startswith(render_results.TABLES['digits']) and default_table < cross_table
  assert '| AE + GMM | 0.800 / 0.700 ± 0.010 (3 seeds, 2 s) |' in block.splitlines()
  assert 'section below' not in block and block.endswith('[`results/README.md`](results/README.md).')


def test_cross_method_cell_counts_failed_seeds_apart_from_the_means():
  rows = [{'seed': s, 'method': 'idec_da', 'acc': a, 'nmi': n, 'ari': 0.5, 'seconds': 10.0, 'failed': None}
          for s, a, n in ((0, 0.9, 0.8), (1, 0.7, 0.6))]
  rows.append({'seed': 2, 'method': 'idec_da', 'acc': None, 'nmi': None, 'ari': None, 'seconds': 1.0,
               'failed': 'diverged at iteration 0'})
  summary = results.summarize(rows, ['idec_da'])['idec_da']
  assert render_results._cross_cell(summary) == '0.800 / 0.700 ± 0.141 (2 seeds, 1 failed, 10 s)'
  assert render_results._cross_cell({'failed': 3}) == '(0 seeds, 3 failed)'
  # A run whose every trial finished, one of them failed, is complete: publish takes it.
  assert results.unfinished({'complete': True, 'seeds': [0, 1, 2], 'methods': {'idec_da': summary}}) is None


def test_epochs_section_shows_a_failed_dec_trial_as_missing(tmp_path, monkeypatch):
  folder = tmp_path / 'mnist_epochs' / 'sgd_100'
  folder.mkdir(parents=True)
  results.write_trials(folder / 'trials.csv', [
      {'seed': 0, 'method': 'ae_kmeans', 'protocol': 'transductive', 'acc': 0.8, 'nmi': 0.7, 'ari': 0.6,
       'seconds': 9.0, 'pretrain_seconds': 600.0},
      {'seed': 0, 'method': 'dec', 'protocol': 'transductive', 'seconds': 3.0, 'pretrain_seconds': 600.0,
       'iterations': 140, 'failed': 'diverged at iteration 140'}])
  monkeypatch.setattr(render_results, 'RESULTS', tmp_path)
  rows = [line for line in render_results.epochs_section().splitlines() if line.startswith('| [sgd]')]
  assert rows == ['| [sgd](mnist_epochs/sgd_100/COMMAND.md) | 100 | 0 | 10.0 | 0.800 / 0.700 | - | - | - |']


def test_a_published_table_left_out_of_tables_stops_the_render(tmp_path, monkeypatch):
  """A results folder with a table but no TABLES line would vanish from the page: the render refuses and names it;
  DEC-keras's own runs (dec_keras_*) have their section elsewhere."""
  monkeypatch.setattr(render_results, 'RESULTS', tmp_path)
  monkeypatch.setattr(render_results, 'TABLES', {'listed': 'A listed run.'})
  for name in ('listed', 'dec_keras_peer', 'forgotten'):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'table.md').write_text('| method |\n')
  with pytest.raises(SystemExit, match='results/forgotten: published but not in') as e:
    render_results.check_listed()
  assert 'listed,' not in str(e.value) and 'dec_keras_peer' not in str(e.value)
  (tmp_path / 'forgotten' / 'table.md').unlink()
  render_results.check_listed()

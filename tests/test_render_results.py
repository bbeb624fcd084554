"""The results page's computed sections: numbers come from the committed trials, differences computed, not typed."""

from __future__ import annotations

import csv

from experiments import render_results


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

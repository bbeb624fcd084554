"""benchmarks/side_by_side.py: only common seeds are compared, differences are in combined standard errors, and
times can come from a subset of the seeds."""

from __future__ import annotations

import numpy as np
import pytest
from absl import app

from benchmarks import side_by_side


def _rows(nmis, pretrain, seeds=None):
  return [{'seed': s, 'method': 'dec', 'acc': v, 'nmi': v, 'ari': v, 'seconds': 10.0, 'pretrain_seconds': t,
           'iterations': 100} for s, v, t in zip(seeds or range(len(nmis)), nmis, pretrain)]


def test_common_seeds_standard_errors_and_timing_seeds():
  runs = {'ref': _rows([0.6, 0.62, 0.64, 0.9], [100, 100, 100, 100], [0, 1, 2, 7]),
          'ours': _rows([0.61, 0.63, 0.65], [100, 400, 100])}
  table = side_by_side.compare(runs, ['dec'])
  assert table['seeds'] == [0, 1, 2]  # seed 7 of ref alone is left out
  ref, ours = table['runs']['ref']['dec'], table['runs']['ours']['dec']
  assert ref['nmi']['mean'] == pytest.approx(0.62) and ref['nmi']['se'] == pytest.approx(0.02 / np.sqrt(3))
  assert ours['pretrain_seconds']['mean'] == pytest.approx(200)
  text = side_by_side.markdown(table, 'ref', 'T')
  assert '+0.010 (+0.6 SE' in text and '| 1.91 |' in text  # 0.010 / hypot(se, se); (200 + 10) / (100 + 10)
  timed = side_by_side.compare(runs, ['dec'], timing_seeds=[0, 2])
  assert timed['runs']['ours']['dec']['pretrain_seconds']['mean'] == pytest.approx(100)
  assert timed['runs']['ours']['dec']['nmi'] == ours['nmi']  # quality still over every common seed
  text = side_by_side.markdown(timed, 'ref', 'T')
  assert '(mean over seeds 0, 2 only)' in text and '| 1.00 |' in text
  with pytest.raises(app.UsageError, match='must be among the compared seeds'):
    side_by_side.compare(runs, ['dec'], timing_seeds=[7])


def test_paired_differences_use_the_seed_by_seed_spread():
  """From one start per seed, a constant offset is many standard errors even when the seeds spread widely."""
  runs = {'ref': _rows([0.5, 0.6, 0.7], [1, 1, 1]), 'ours': _rows([0.51, 0.62, 0.71], [1, 1, 1])}
  table = side_by_side.compare(runs, ['dec'])
  unpaired, paired = (side_by_side.markdown(table, 'ref', 'T', paired=p) for p in (False, True))
  assert '+0.013 (+0.2 SE' in unpaired and 'paired' not in unpaired
  assert '+0.0133 (+4.0 SE, p 0.06)' in paired and 'paired two-sided t-test' in paired


"""A workdir under faults: processes racing on one seed, damaged files, failed first runs, changed settings of
one method, leftovers of killed writes, Ctrl-C. Nothing finished is lost; every problem gets one clear line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import REPO_ROOT
from test_benchmark import _small_config
from udl_jax import benchmark, methods, records, results
from udl_jax.errors import UserError


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished 1-seed run of all four methods."""
  workdir = tmp_path_factory.mktemp('finished')
  benchmark.run(_small_config(seeds=1), workdir)
  return workdir


@pytest.fixture
def copy(finished, tmp_path):
  shutil.copytree(finished, tmp_path / 'run')
  return tmp_path / 'run'


def _rows(workdir) -> dict:
  return {(r['seed'], r['method']): r for r in results.read_trials(workdir / 'trials.csv')}


def test_new_plugin_methods_join_a_finished_workdir(copy, tmp_path, monkeypatch):
  """The README's 'Adding a clustering loss' command, run where the default benchmark ran: `imports` and
  `methods` select work; they do not make it a different run."""
  (tmp_path / 'my_losses_for_test.py').write_text(textwrap.dedent('''
      import jax.numpy as jnp
      from udl_jax import methods

      @methods.register('dec_l2_test')
      def dec_l2_test(weight: float = 1.0) -> methods.FineTuner:
        return methods.FineTuner('dec_l2_test', loss=lambda b: weight * jnp.mean((b.p - b.q) ** 2))
  '''))
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(methods, '_FACTORIES', dict(methods._FACTORIES))
  monkeypatch.delitem(sys.modules, 'my_losses_for_test', raising=False)
  before = _rows(copy)
  config = _small_config(seeds=1, imports='my_losses_for_test', methods='kmeans,ae_kmeans,dec,dec_l2_test')
  benchmark.run(config, copy)
  after = _rows(copy)
  assert set(after) == set(before) | {(0, 'dec_l2_test')}
  assert all(after[k] == before[k] for k in before)  # nothing finished was redone


def test_changing_one_methods_settings_touches_only_requested_methods(copy):
  before = _rows(copy)
  benchmark.run(_small_config(seeds=1, methods='kmeans,ae_kmeans,dec', **{'cluster.maxiter': 60}), copy)
  after = _rows(copy)
  assert set(after) == set(before)  # IDEC's row survives
  assert after[0, 'idec'] == before[0, 'idec'] and (copy / 'seed_0' / 'idec' / 'params').exists()
  assert after[0, 'dec']['iterations'] == 60 != before[0, 'dec']['iterations']
  # IDEC asked for with the new settings: now it is redone, since it was made with the old ones.
  benchmark.run(_small_config(seeds=1, methods='idec', **{'cluster.maxiter': 60}), copy)
  assert _rows(copy)[0, 'idec']['iterations'] == 60


def test_failed_first_run_does_not_lock_its_workdir(tmp_path, monkeypatch):
  """A first run that failed after pretraining (no finished trial) accepts corrected settings and discards the
  autoencoder trained with the old ones."""
  def crash(self):
    raise UserError('boom')
  with monkeypatch.context() as m:
    m.setattr(benchmark.SeedRun, 'ae_kmeans', crash)
    with pytest.raises(UserError, match='boom'):
      benchmark.run(_small_config(seeds=1, methods='ae_kmeans'), tmp_path)
  assert (tmp_path / 'seed_0' / 'ae' / 'params').exists()
  old_history = (tmp_path / 'seed_0' / 'ae' / 'metrics.jsonl').read_text()
  benchmark.run(_small_config(seeds=1, methods='ae_kmeans', **{'pretrain.learning_rate': 3e-3}), tmp_path)
  assert (tmp_path / 'seed_0' / 'ae' / 'metrics.jsonl').read_text() != old_history  # trained again
  assert json.loads((tmp_path / 'config.json').read_text())['pretrain']['learning_rate'] == 3e-3
  with pytest.raises(UserError, match='different settings'):  # now it has finished work: refused
    benchmark.run(_small_config(seeds=1, methods='ae_kmeans'), tmp_path)


def test_damaged_checkpoint_and_cache_of_a_real_run_are_survived(tmp_path, logged):
  """DEC's newest checkpoint truncated and the k-means cache cut in half, after a kill: the run falls back to
  the previous checkpoint, recomputes the cache, names both files, and ends where the intact run ended."""
  config = _small_config(seeds=1, methods='ae_kmeans,dec', **{'cluster.checkpoint_every': 1,
                                                               'cluster.maxiter': 60, 'cluster.tol': 0.0})
  benchmark.run(config, tmp_path)
  intact = np.load(tmp_path / 'seed_0' / 'dec_labels.npz')['labels']
  seed_dir = tmp_path / 'seed_0'
  steps = sorted(int(p.name) for p in (seed_dir / 'dec' / 'checkpoints').iterdir() if p.name.isdigit())
  newest = seed_dir / 'dec' / 'checkpoints' / str(steps[-1])
  data_file = max((p for p in newest.rglob('*') if p.is_file() and '/d/' in str(p)), key=lambda p: p.stat().st_size)
  data_file.write_bytes(data_file.read_bytes()[:data_file.stat().st_size // 2])
  cache = seed_dir / 'ae_kmeans.npz'
  cache.write_bytes(cache.read_bytes()[:cache.stat().st_size // 2])
  for path in ('dec_labels.npz', 'dec/params', 'dec/metrics.jsonl'):
    shutil.rmtree(seed_dir / path) if (seed_dir / path).is_dir() else (seed_dir / path).unlink()
  results.write_trials(seed_dir / 'trials.csv', [r for r in records.read_seed(tmp_path, 0) if r['method'] != 'dec'])
  logged.clear()
  benchmark.run(config, tmp_path)
  err = '\n'.join(logged)
  assert f'{newest} cannot be restored' in err and f'resuming from step {steps[-2]}' in err
  assert f'{cache} is unreadable' in err
  np.testing.assert_array_equal(np.load(seed_dir / 'dec_labels.npz')['labels'], intact)


def test_leftovers_of_killed_writes_are_cleaned(copy):
  leftovers = [copy / '.trials.csv.x1.tmp', copy / 'seed_0' / '.trials.csv.x2.tmp',
               copy / 'seed_0' / 'dec' / '.metrics.jsonl.x3.tmp']
  for path in leftovers:
    path.write_text('half')
  benchmark.run(_small_config(seeds=1), copy)
  assert not any(p.exists() for p in leftovers)


# ---------------------------------------------------------------------------------------- real processes

def _launch(workdir, *flags) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  args = ['--config=configs/benchmark.py', '--config.seeds=1', '--config.pretrain.epochs=3',
          '--config.model.dims=(32,16,6)', '--config.cluster.maxiter=30', '--config.cluster.kmeans_n_init=2',
          f'--workdir={workdir}', *flags]
  return subprocess.Popen([sys.executable, '-m', 'experiments.benchmark', *args], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_on_one_seed_lose_nothing_and_train_once(tmp_path):
  """DEC in one process while IDEC starts in another, on the same seed of one workdir: both rows are kept and
  the autoencoder is pretrained once (the second process waits for the seed, then reuses it)."""
  procs = [_launch(tmp_path, '--config.methods=kmeans,ae_kmeans,dec'), _launch(tmp_path, '--config.methods=idec')]
  errs = []
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    errs.append(err)
  assert sorted(m for _, m in _rows(tmp_path)) == ['ae_kmeans', 'dec', 'idec', 'kmeans']
  assert sum(' pretraining of seed 0: 3 epochs' in err for err in errs) == 1, errs  # pretrained by exactly one of them


def test_ctrl_c_says_how_to_resume(tmp_path):
  # A suite started in the background (`nohup pytest &`) ignores SIGINT, and a child inherits that: the child
  # starts while this process handles SIGINT instead (a handler, unlike 'ignore', does not survive exec).
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    proc = _launch(tmp_path, '--config.pretrain.epochs=100000', '--config.methods=ae_kmeans')
  finally:
    signal.signal(signal.SIGINT, previous)
  deadline = time.monotonic() + 120
  log = tmp_path / 'log.txt'
  while time.monotonic() < deadline and not (log.exists() and 'epoch 2/' in log.read_text()):
    time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err[-2000:]
  assert 'Traceback' not in err and 're-run the same command to resume' in err

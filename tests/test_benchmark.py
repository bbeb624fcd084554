"""The benchmark entry point end to end on digits (tiny settings), its resume rules, and the absl launcher."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO_ROOT
from udl_jax import assign, benchmark, data, models, records, results, train
from udl_jax.errors import Diverged, UserError

from configs import benchmark as benchmark_config  # noqa: E402

METHODS = ['kmeans', 'ae_kmeans', 'dec', 'idec']
N_DIGITS = 1797


def _small_config(**overrides):
  c = benchmark_config.get_config()
  c.seeds = 2
  c.pretrain.epochs = 3
  c.model.dims = (32, 16, 6)
  c.cluster.maxiter = 30  # one chunk of update_interval 30
  c.cluster.kmeans_n_init = 2
  c.keep_checkpoints = 'keep'  # these tests simulate kills by removing finished records: the checkpoints stay
  for key, value in overrides.items():
    block = c
    *path, last = key.split('.')
    for p in path:
      block = block[p]
    block[last] = value
  return c


def _trials(workdir):
  with open(workdir / 'trials.csv', newline='') as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('bench')
  config = _small_config()
  payload = benchmark.run(config, workdir)
  return config, workdir, payload


def test_outputs(bench):
  config, workdir, payload = bench
  rows = _trials(workdir)
  assert len(rows) == 2 * 4
  assert sorted((int(r['seed']), r['method']) for r in rows) == sorted((s, m) for s in (0, 1) for m in METHODS)
  for r in rows:
    for k in ('acc', 'nmi', 'ari'):
      assert 0.0 <= float(r[k]) <= 1.0 or k == 'ari'
    assert r['protocol'] == 'transductive'
  # raw-pixel k-means on digits is a known quantity (ACC ~0.7-0.8); the deep rows use a 3-epoch autoencoder
  assert all(float(r['acc']) > 0.6 for r in rows if r['method'] == 'kmeans')

  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['dataset'] == 'digits' and summary['n_samples'] == N_DIGITS and summary['seeds'] == [0, 1]
  assert list(summary['methods']) == METHODS
  for method, stats in summary['methods'].items():
    mine = [float(r['nmi']) for r in rows if r['method'] == method]
    assert stats['nmi']['n'] == 2 and stats['acc']['n'] == 2 and stats['ari']['n'] == 2
    np.testing.assert_allclose(stats['nmi']['mean'], np.mean(mine), rtol=1e-6)
    np.testing.assert_allclose(stats['nmi']['std'], np.std(mine, ddof=1), rtol=1e-6, atol=1e-12)
  for method in ('dec', 'idec'):
    assert summary['methods'][method]['iterations']['mean'] > 0
  assert payload['methods'] == summary['methods']

  table = (workdir / 'table.md').read_text()
  for label in ('KMeans (raw pixels)', 'AE + KMeans', 'DEC', 'IDEC'):
    assert f'| {label} |' in table
  assert table.count('**') >= 6  # the best mean of each of ACC, NMI, ARI in bold
  assert 'digits (1797 images)' in table and '2 seeds (0..1), dtype float32, NMI arithmetic' in table
  assert '± is the sample standard deviation over seeds' in table and 'pretraining' in table
  assert json.loads((workdir / 'config.json').read_text())['cluster']['maxiter'] == 30
  assert (workdir / 'clusters.png').stat().st_size > 0
  for seed in (0, 1):
    for method in METHODS:
      saved = np.load(workdir / f'seed_{seed}' / f'{method}_labels.npz')
      np.testing.assert_array_equal(saved['index'], np.arange(N_DIGITS))
      assert saved['labels'].shape == (N_DIGITS,)
    assert np.load(workdir / f'seed_{seed}' / 'dec_labels.npz')['confidence'].shape == (N_DIGITS,)


@pytest.fixture
def copy_of_bench(bench, tmp_path):
  config, workdir, _ = bench
  copy = tmp_path / 'bench'
  shutil.copytree(workdir, copy)
  return config, copy


def test_rerun_skips_finished_trials(copy_of_bench, monkeypatch):
  config, workdir = copy_of_bench
  before = results.read_trials(workdir / 'trials.csv')

  def must_not_run(*args, **kwargs):
    raise AssertionError('a finished trial was run again')

  monkeypatch.setattr(benchmark, 'run_trials', must_not_run)
  benchmark.run(config, workdir)
  assert results.read_trials(workdir / 'trials.csv') == before  # (re-read: '30' comes back as 30.0)
  # Seeds and methods may change when resuming: a subset of what is done runs nothing either.
  subset = _small_config(methods='kmeans,dec', seeds=1)
  payload = benchmark.run(subset, workdir)
  assert list(payload['methods']) == ['kmeans', 'dec']


def test_processes_running_other_seeds_share_the_workdir(tmp_path, monkeypatch):
  """Seed 1 finishes in another process while seed 0 runs: neither record is lost, the last table has both."""
  real_trials, others = benchmark.run_trials, []

  def seed_1_finishes_meanwhile(runs, method):
    if runs[0].seed == 0 and not others:
      others.append(benchmark.run(_small_config(methods='kmeans', first_seed=1, seeds=1), tmp_path))
    return real_trials(runs, method)

  monkeypatch.setattr(benchmark, 'run_trials', seed_1_finishes_meanwhile)
  payload = benchmark.run(_small_config(methods='kmeans', seeds=1), tmp_path)
  assert others[0]['seeds'] == [1] and payload['seeds'] == [0]  # each table: the seeds its command asked for
  assert sorted((int(r['seed']), r['method']) for r in _trials(tmp_path)) == [(0, 'kmeans'), (1, 'kmeans')]
  assert [r['seed'] for r in results.read_trials(tmp_path / 'seed_0' / 'trials.csv')] == [0]


def test_a_seed_another_process_works_on_is_deferred_not_queued_behind(tmp_path, logged):
  """Seed 0's lock is held by another process: this one runs seed 1 first, then waits for seed 0 and, the other
  process having died without finishing it, runs it: the table is complete."""
  holder = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f"""
      import sys, time
      from pathlib import Path
      from udl_jax import records
      with records.seed_lock(Path({str(tmp_path)!r}), 0):
        print('locked', flush=True)
        time.sleep(8)""")], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'locked'
  payload = benchmark.run(_small_config(methods='kmeans'), tmp_path)
  holder.wait()
  trials = [line for line in logged if line.startswith('trial ')]
  assert [t.split()[3] for t in trials] == ['1', '0'], trials  # 'trial 1/2 seed 1 kmeans: ...'
  assert any('seed 0: another process is working on it' in line for line in logged)
  assert payload['complete'] and payload['seeds'] == [0, 1]


def test_table_of_finished_trials_does_not_wait_for_a_busy_seed(copy_of_bench, monkeypatch):
  """Another process holds seed 0's lock (running a method this command does not ask for): a command whose
  trials are all recorded writes its table at once instead of waiting for that lock."""
  config, workdir = copy_of_bench
  holder = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f"""
      import time
      from pathlib import Path
      from udl_jax import records
      with records.seed_lock(Path({str(workdir)!r}), 0):
        print('locked', flush=True)
        time.sleep(120)""")], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    monkeypatch.setattr(benchmark, 'run_trials', lambda *a, **k: pytest.fail('a finished trial was run again'))
    payload = benchmark.run(config, workdir)
    assert holder.poll() is None  # returned while seed 0 was still locked: it did not wait
    assert payload['complete'] and payload['seeds'] == [0, 1]
  finally:
    holder.kill()
    holder.wait()


def test_old_workdir_records_move_into_seed_folders_and_copied_seeds_join(copy_of_bench, tmp_path, monkeypatch):
  config, workdir = copy_of_bench
  before = results.read_trials(workdir / 'trials.csv')
  seed_1 = tmp_path / 'elsewhere' / 'seed_1'
  shutil.move(workdir / 'seed_1', seed_1)
  (workdir / 'seed_0' / 'trials.csv').unlink()  # the layout before per-seed records: only the top-level file
  assert records.read_all(workdir) == [r for r in before if r['seed'] == 0]
  assert (workdir / 'seed_0' / 'trials.csv').exists()  # moved in; seed 1's rows dropped with its folder

  shutil.copytree(seed_1, workdir / 'seed_1')  # a seed run in another workdir with the same config
  monkeypatch.setattr(benchmark, 'run_trials', lambda *a, **k: pytest.fail('a finished trial was run again'))
  payload = benchmark.run(config, workdir)
  assert payload['seeds'] == [0, 1] and results.read_trials(workdir / 'trials.csv') == before


@pytest.mark.parametrize('change', [{'pretrain.epochs': 4}, {'cluster.kmeans_n_init': 3},
                                    {'model.dims': (32, 16, 5)}, {'protocol': 'holdout'}])
def test_changed_config_in_same_workdir_is_refused(copy_of_bench, change, monkeypatch):
  _, workdir = copy_of_bench
  monkeypatch.setattr(benchmark, 'run_trials', lambda *a, **k: pytest.fail('must refuse before any trial'))
  config = _small_config(**change)
  with pytest.raises(UserError) as e:
    benchmark.run(config, workdir)
  key = next(iter(change)).split('.')[0]
  assert key in str(e.value) and 'workdir' in str(e.value)


def test_changed_clustering_settings_redo_only_that_method(copy_of_bench, monkeypatch, logged):
  """IDEC's own learning rate changes: only its trials run again, from the saved autoencoders and k-means, as
  --print_config's plan says beforehand, and the progress counts them as not done."""
  _, workdir = copy_of_bench
  before = {(r['seed'], r['method']): r for r in results.read_trials(workdir / 'trials.csv')}
  old_checkpoints = workdir / 'seed_0' / 'idec' / 'checkpoints'
  assert old_checkpoints.exists()
  ae_steps = sorted(p.name for p in (workdir / 'seed_0' / 'ae' / 'checkpoints').iterdir())
  config = _small_config(**{'cluster.method_overrides.idec.learning_rate': 0.01})
  assert benchmark.plan(config, workdir).splitlines()[1:3] == [
      f'  seed {s}: run idec (again, recorded with other clustering settings: idec; finished: kmeans, ae_kmeans, dec)'
      for s in (0, 1)]
  benchmark.run(config, workdir)
  assert any('6 of 8 trials already done' in line for line in logged)
  assert [line.split(':')[0] for line in logged if line.startswith('trial ')] == \
      ['trial 7/8 seed 0 idec', 'trial 8/8 seed 1 idec']
  after = {(r['seed'], r['method']): r for r in results.read_trials(workdir / 'trials.csv')}
  assert set(after) == set(before)
  for key, row in after.items():
    if key[1] == 'idec':
      assert row != before[key]
      assert row['pretrain_seconds'] == before[key]['pretrain_seconds']  # the same, saved autoencoder
    else:
      assert row == before[key]
  assert sorted(p.name for p in (workdir / 'seed_0' / 'ae' / 'checkpoints').iterdir()) == ae_steps
  assert json.loads((workdir / 'seed_0' / 'methods.json').read_text())['idec']['learning_rate'] == 0.01


def test_a_diverged_trial_is_recorded_as_failed_and_the_run_goes_on(copy_of_bench, tmp_path, monkeypatch):
  """IDEC with an absurd learning rate diverges on both seeds, and so does VaDE's own training (made to): each
  trial is recorded with where it failed and no result, the run finishes, its table says so, a rerun does not
  repeat them and publish takes the table."""
  from udl_jax.methods import vade

  def vade_diverges(seed, *args):
    raise Diverged(f'vade: loss became non-finite at epoch 3 of seed {seed.seed}', 3)
  monkeypatch.setattr(vade, 'run', vade_diverges)
  _, workdir = copy_of_bench
  config = _small_config(methods=','.join(METHODS + ['vade']), **{'cluster.method_overrides.idec.learning_rate': 1e12})
  payload = benchmark.run(config, workdir)
  failed = [r for r in results.read_trials(workdir / 'trials.csv') if r['failed']]
  assert [(r['seed'], r['method'], r['failed']) for r in failed] == [
      (0, 'idec', 'diverged at iteration 0'), (0, 'vade', 'diverged at epoch 3'),
      (1, 'idec', 'diverged at iteration 0'), (1, 'vade', 'diverged at epoch 3')]
  assert all(r['acc'] is None and r['seconds'] > 0 for r in failed if r['method'] == 'idec')
  assert not any((workdir / 'seed_0' / name).exists() for name in ('idec_labels.npz', 'idec/params'))
  assert payload['complete'] and payload['methods']['idec'] == {'failed': 2} and payload['methods']['vade'] == {
      'failed': 2}
  assert payload['methods']['dec']['nmi']['n'] == 2 and 'failed' not in payload['methods']['dec']
  table = (workdir / 'table.md').read_text()
  assert '| IDEC | n/a | n/a | n/a | 0 of 2 (2 failed) |' in table and 'A failed trial' in table
  assert 'diverged at iteration 0' in (workdir / 'report.html').read_text()
  monkeypatch.setattr(benchmark, 'run_trials', lambda *a, **k: pytest.fail('a failed trial was run again'))
  benchmark.run(config, workdir)
  proc = subprocess.run([sys.executable, '-m', 'experiments.publish', f'--workdir={workdir}', '--name=x',
                         '--command=c'], capture_output=True, text=True, cwd=tmp_path,
                        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
  assert proc.returncode == 0, proc.stderr


def test_time_estimate_counts_each_seeds_pretraining_once():
  """Seed 0 took 100 s to pretrain and 5 s / 20 s for its two deep methods. Seed 1 still has to pretrain and run
  both; while its first deep trial pretrains (the running phase, with its own ETA) the rest is only the second."""
  rows = [{'seed': 0, 'method': 'kmeans', 'seconds': 60.0, 'pretrain_seconds': None},
          {'seed': 0, 'method': 'ae_kmeans', 'seconds': 5.0, 'pretrain_seconds': 100.0},
          {'seed': 0, 'method': 'dec', 'seconds': 20.0, 'pretrain_seconds': 100.0}]
  assert benchmark._time_estimate(rows, [(1, 'ae_kmeans'), (1, 'dec')]) == 125.0
  assert benchmark._time_estimate(rows, [(1, 'dec')], frozenset({1})) == 20.0
  assert benchmark._time_estimate(rows, [(1, 'kmeans'), (1, 'dec')]) == 180.0
  assert benchmark._time_estimate(rows, [(1, 'idec')]) is None  # not timed yet


def test_a_collapsed_autoencoder_fails_the_methods_that_start_from_it(tmp_path, monkeypatch, caplog):
  """SGD with lr 10 kills a layer's ReLUs in the first steps on both seeds (the loss stays finite): each seed's
  reconstructions are one image. Every method that starts from the autoencoder is recorded as failed with that
  reason, raw-pixel KMeans is scored, the run completes and says so, and a rerun runs nothing."""
  config = _small_config(**{'pretrain.optimizer': 'sgd', 'pretrain.learning_rate': 10.0,
                            'methods': 'kmeans,ae_kmeans,n2d,dec'})
  with caplog.at_level('INFO', logger='udl_jax'):
    payload = benchmark.run(config, tmp_path)
  lines = [r.getMessage() for r in caplog.records]
  assert sum('vary by' in line for line in lines) == 2  # the reason in full once per seed, not once per trial
  assert any(line.startswith('trial') and line.endswith('seed 1 dec: failed: autoencoder collapsed (0.0 s)')
             for line in lines), lines
  rows = results.read_trials(tmp_path / 'trials.csv')
  assert [(r['seed'], r['method']) for r in rows if not r['failed']] == [(0, 'kmeans'), (1, 'kmeans')]
  failed = [r for r in rows if r['failed']]
  assert len(failed) == 6 and all(r['failed'].startswith('autoencoder collapsed') and r['acc'] is None
                                  and r['pretrain_seconds'] > 0 for r in failed)
  assert not (tmp_path / 'seed_0' / 'dec_labels.npz').exists() and not (tmp_path / 'seed_0' / 'dec').exists()
  assert payload['complete'] and payload['methods']['dec']['failed'] == 2 and 'nmi' not in payload['methods']['dec']
  table = (tmp_path / 'table.md').read_text()
  assert '| DEC | n/a | n/a | n/a | 0 of 2 (2 failed) |' in table and 'A failed trial' in table
  monkeypatch.setattr(benchmark, 'run_trials', lambda *a, **k: pytest.fail('a failed trial was run again'))
  benchmark.run(config, tmp_path)


def test_a_run_whose_every_trial_failed_completes_with_its_table_and_report(tmp_path):
  """Every seed's autoencoder collapsed and only methods that start from it were asked for: no trial has a
  result, and the run still writes its table and a report that says why there is no embedding map."""
  config = _small_config(**{'pretrain.optimizer': 'sgd', 'pretrain.learning_rate': 10.0, 'methods': 'ae_kmeans'})
  payload = benchmark.run(config, tmp_path)
  assert payload['complete'] and payload['methods']['ae_kmeans']['failed'] == 2
  assert '| AE + KMeans | n/a | n/a | n/a | 0 of 2 (2 failed) |' in (tmp_path / 'table.md').read_text()
  assert 'no trial of this run has a result' in (tmp_path / 'report.html').read_text()


def test_legacy_workdir_settings_come_from_its_config(copy_of_bench):
  """A workdir from before methods.json (and before the cluster block had an optimizer): its trials count as
  made with its config.json's cluster block, read as SGD without overrides."""
  _, workdir = copy_of_bench
  saved = json.loads((workdir / 'config.json').read_text())
  for key in ('optimizer', 'method_overrides'):
    del saved['cluster'][key]
  (workdir / 'config.json').write_text(json.dumps(saved))
  for seed in (0, 1):
    (workdir / f'seed_{seed}' / 'methods.json').unlink()
  legacy = {**benchmark.udl_config.LEGACY_CLUSTER_DEFAULTS, **saved['cluster']}
  records.record_legacy_settings(workdir / 'seed_0', legacy)
  now = _small_config().cluster.to_dict()
  assert records.stale_methods(workdir, 0, ['kmeans', 'dec', 'idec'], now) == ['idec']


def test_holdout_scores_only_held_out_images(tmp_path):
  """Two seeds as one batch (seed_batch=2): each clusters its own fit split."""
  config = _small_config(seeds=2, seed_batch=2, protocol='holdout', methods='kmeans,ae_kmeans,dec')
  payload = benchmark.run(config, tmp_path)
  rows = [r for r in _trials(tmp_path) if r['seed'] == '0']
  assert [r['method'] for r in rows] == ['kmeans', 'ae_kmeans', 'dec']
  assert all(r['protocol'] == 'holdout' for r in rows)
  fit_idx, eval_idx = train.split_train_val(N_DIGITS, 0.3, 0)
  assert len(eval_idx) == round(0.3 * N_DIGITS) == 539
  for method in ('kmeans', 'ae_kmeans', 'dec'):
    saved = np.load(tmp_path / 'seed_0' / f'{method}_labels.npz')
    np.testing.assert_array_equal(saved['index'], eval_idx)
    assert saved['labels'].shape == (539,)
  assert np.load(tmp_path / 'seed_0' / 'dec_labels.npz')['confidence'].shape == (539,)
  # The autoencoder's k-means (the start of DEC) saw only the fit split.
  assert np.load(tmp_path / 'seed_0' / 'ae_kmeans.npz')['labels'].shape == (len(fit_idx),)
  assert payload['protocol'] == 'holdout' and payload['methods']['dec']['nmi']['n'] == 2
  other_fit, _ = train.split_train_val(N_DIGITS, 0.3, 1)
  assert np.load(tmp_path / 'seed_1' / 'ae_kmeans.npz')['labels'].shape == (len(other_fit),)
  assert not np.array_equal(np.load(tmp_path / 'seed_1' / 'dec_labels.npz')['index'], eval_idx)
  for seed in (0, 1):  # per-seed records, as without batching
    assert all((tmp_path / f'seed_{seed}' / phase / 'params').is_dir() for phase in ('ae', 'dec'))
  # Re-running resumes: nothing left to do. (Batched against seed by seed: tests/test_seed_batch.py.)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(benchmark, 'run_trials', lambda *a: pytest.fail('a finished trial was run again'))
    assert benchmark.run(config, tmp_path)['methods'] == payload['methods']


# ------------------------------------------------------------------------------------------- the launcher

def _launcher(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.Popen([sys.executable, '-m', 'experiments.benchmark', *args], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope='module')
def launcher_errors(tmp_path_factory):
  """Both bad command lines, run side by side: {name: (returncode, stderr)}."""
  workdir = tmp_path_factory.mktemp('launcher')
  procs = {
      'typo': _launcher('--config=configs/benchmark.py', '--config.seedz=1', f'--workdir={workdir / "a"}'),
      'dataset': _launcher('--config=configs/benchmark.py:dataset=nope', f'--workdir={workdir / "b"}'),
  }
  out = {}
  for name, p in procs.items():
    _, err = p.communicate(timeout=120)
    out[name] = (p.returncode, err)
  assert not (workdir / 'a').exists() and not (workdir / 'b').exists()  # nothing started
  return out



def test_launcher_config_key_typo(launcher_errors):
  code, err = launcher_errors['typo']
  assert code != 0
  assert 'seedz' in err
  assert 'Traceback' not in err, err


def test_launcher_unknown_dataset(launcher_errors):
  code, err = launcher_errors['dataset']
  assert code != 0
  lines = [l for l in err.splitlines() if 'nope' in l]
  assert len(lines) == 1, err
  assert all(name in lines[0] for name in ('digits', 'mnist', 'fashion_mnist', 'usps'))
  assert 'Traceback' not in err, err


def test_launcher_errors_exit_nonzero_and_name_the_problem(launcher_errors):
  """What holds already, traceback or not: a failing exit status and the offending key/name in the message."""
  code, err = launcher_errors['typo']
  assert code != 0 and 'seedz' in err and 'seeds' in err  # ml_collections suggests the right key
  code, err = launcher_errors['dataset']
  assert code != 0 and "unknown dataset 'nope'" in err and 'digits' in err


def test_table_bolds_the_best_mean_and_shows_no_spread_for_one_seed():
  row = lambda seed, method, nmi: {'seed': seed, 'method': method, 'acc': nmi, 'nmi': nmi, 'ari': nmi,
                                   'seconds': 1.0}
  rows = [row(0, 'kmeans', 0.5), row(1, 'kmeans', 0.7), row(0, 'dec', 0.8)]
  table = results.markdown_table(results.summarize(rows, ['kmeans', 'dec']))
  kmeans_line, dec_line = table.splitlines()[2:]
  assert '0.600 ± 0.141' in kmeans_line and kmeans_line.endswith('| 2 | 1.0 |')
  assert '| **0.800** |' in dec_line and '±' not in dec_line and dec_line.endswith('| 1 | 1.0 |')


def test_time_column_counts_each_method_alone_and_the_shared_pretraining_once():
  rows = [{'seed': 0, 'method': m, 'acc': 0.5, 'nmi': 0.5, 'ari': 0.5, 'seconds': s, 'pretrain_seconds': p}
          for m, s, p in (('kmeans', 1.0, None), ('ae_kmeans', 2.0, 100.0), ('dec', 30.0, 100.0))]
  summary = results.summarize(rows, ['kmeans', 'ae_kmeans', 'dec'])
  table = results.markdown_table(summary)
  assert [line.rsplit('|', 2)[1].strip() for line in table.splitlines()[2:]] == ['1.0', '2.0', '30.0']
  assert 'took 100.0 s per seed more, once' in results.table_notes(summary)


def test_table_aggregates_only_the_requested_seeds_and_methods(copy_of_bench):
  """A workdir holding seeds 0-1 x 4 methods, asked for seed 0 and kmeans,dec: the table says so and holds
  exactly those; trials.csv keeps every record."""
  _, workdir = copy_of_bench
  payload = benchmark.run(_small_config(seeds=1, methods='kmeans,dec'), workdir)
  assert payload['seeds'] == [0] and payload['complete'] and list(payload['methods']) == ['kmeans', 'dec']
  assert all(s['nmi']['n'] == 1 for s in payload['methods'].values())
  assert len(_trials(workdir)) == 8
  assert '1 seed (0)' in (workdir / 'table.md').read_text()


def test_unfinished_runs_are_flagged_and_refused_by_publish(copy_of_bench, tmp_path):
  config, workdir = copy_of_bench
  assert results.unfinished(json.loads((workdir / 'summary.json').read_text())) is None
  rows = [r for r in records.read_all(workdir) if not (r['seed'] == 1 and r['method'] == 'dec')]
  payload = benchmark.write_outputs(config, benchmark.data.from_config(config), workdir, rows, 0.0)
  assert payload['complete'] is False and payload['missing_trials'] == 1
  assert 'INCOMPLETE: 1 of 8 trials not finished' in (workdir / 'table.md').read_text()
  assert results.unfinished(payload) == '1 of its requested trials have not run'
  legacy = {'seeds': [0, 1, 2], 'methods': {'kmeans': {'nmi': {'n': 3}}, 'dec': {'nmi': {'n': 2}}}}
  assert results.unfinished(legacy) == 'dec ran on fewer than its 3 seeds'
  proc = subprocess.run([sys.executable, '-m', 'experiments.publish', f'--workdir={workdir}', '--name=x',
                         '--command=c'], capture_output=True, text=True, cwd=tmp_path,
                        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
  assert proc.returncode == 2 and 'is unfinished: 1 of its requested trials' in proc.stderr, proc.stderr
  assert not (tmp_path / 'results').exists()


@pytest.mark.parametrize('keep, left', [('none', []), ('last', ['newest']), ('keep', ['older', 'newest'])])
def test_finished_phases_keep_what_keep_checkpoints_says(tmp_path, keep, left):
  folder = tmp_path / 'checkpoints'
  for step in ('5', '10'):
    (folder / step).mkdir(parents=True)
  benchmark.prune_checkpoints(folder, keep)
  names = {'5': 'older', '10': 'newest'}
  kept = sorted(names[p.name] for p in folder.iterdir()) if folder.exists() else []
  assert kept == sorted(left)


def test_default_run_leaves_no_checkpoints_of_finished_phases(tmp_path):
  config = _small_config(seeds=1, methods='ae_kmeans,dec')
  config.keep_checkpoints = benchmark_config.get_config().keep_checkpoints  # the default: 'none'
  benchmark.run(config, tmp_path)
  assert not list(tmp_path.rglob('checkpoints'))
  assert (tmp_path / 'seed_0' / 'ae' / 'params').exists() and (tmp_path / 'seed_0' / 'dec' / 'params').exists()


def test_dataset_flag_applies_its_preset_and_print_config_runs_nothing(tmp_path):
  """--config.dataset=mnist_test (and --config.reference=dec_keras) resolve as :dataset=mnist_test,reference=dec_keras
  (the preset and DEC-keras's reference mode), other flags still win, and --print_config shows it and the plan
  without touching the workdir or loading data."""
  runs = {name: _launcher(*args, f'--workdir={tmp_path / name}', '--print_config') for name, args in {
      'flag': ['--config.dataset=mnist_test', '--config.reference=dec_keras', '--config.pretrain.learning_rate=0.5',
               '--config.seeds=2'],
      'colon': ['--config=configs/benchmark.py:dataset=mnist_test,reference=dec_keras',
                '--config.pretrain.learning_rate=0.5', '--config.seeds=2']}.items()}
  out = {}
  for name, p in runs.items():
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    out[name] = stdout
  assert out['flag'] == out['colon'].replace(str(tmp_path / 'colon'), str(tmp_path / 'flag'))
  assert 'epochs: 300' in out['flag'] and 'optimizer: sgd' in out['flag'] and 'learning_rate: 0.5' in out['flag']
  assert 'batch_order: in_order' in out['flag'] and 'partial_batch: true' in out['flag']
  assert 'seed 1: run kmeans, ae_kmeans, dec, idec' in out['flag'] and 'seed 2' not in out['flag']
  assert not any(tmp_path.iterdir())


def test_dec_keras_peer_can_start_from_a_udl_jax_seed(bench):
  """benchmarks/dec_keras.py --start_from: a seed's pretrained autoencoder as Keras weights (encoder_0.., then
  Keras' decoder_3..decoder_0 = Flax decoder_0..), each kernel (in, out), a chain from the image back to it, and
  the k-means start whose centres the labels are nearest to."""
  from benchmarks import dec_keras
  _, workdir, _ = bench
  weights, labels, centres = dec_keras.udl_jax_start(workdir, 1)
  kernels, biases = weights[::2], weights[1::2]
  assert [k.shape[1] for k in kernels] == [b.shape[0] for b in biases] == [32, 16, 6, 16, 32, 64]
  assert all(a.shape[1] == b.shape[0] for a, b in zip(kernels, kernels[1:])) and kernels[0].shape[0] == 64
  config, params, _ = assign.load_run(workdir, 'ae_kmeans', 1)
  model = models.from_config(config, (8, 8, 1))
  h = models.model_input('ae', data.load('digits').x)
  z = np.asarray(train.embed(model, params, h))
  np.testing.assert_array_equal(((z[:, None] - centres[None]) ** 2).sum(-1).argmin(1), labels)
  for k, b in zip(kernels[:2], biases[:2]):
    h = np.maximum(h @ k + b, 0)
  np.testing.assert_allclose(h @ kernels[2] + biases[2], z, atol=1e-4)  # the Keras encoder's embedding


def test_dcec_reference_mode_runs_end_to_end(tmp_path):
  """reference=dcec on digits (DCEC's conv autoencoder, shrunk): pretraining, CAE + KMeans and DCEC run, DCEC
  moves from its k-means start, and the table says which reference mode made it."""
  config = benchmark_config.get_config('reference=dcec')
  config.seeds, config.pretrain.epochs, config.model.conv_features = 1, 2, (8, 16, 16)
  config.cluster.maxiter, config.cluster.update_interval, config.cluster.kmeans_n_init = 14, 7, 2
  config.cluster.tol = 0.0
  payload = benchmark.run(config, tmp_path)
  assert payload['complete'] and set(payload['methods']) == {'kmeans', 'ae_kmeans', 'dcec'}
  assert 'DCEC reference mode' in (tmp_path / 'table.md').read_text().splitlines()[0]
  [row] = [r for r in _trials(tmp_path) if r['method'] == 'dcec']
  assert float(row['iterations']) == 14
  start, trained = (assign.load_run(tmp_path, m, 0)[2] for m in ('ae_kmeans', 'dcec'))
  assert np.abs(np.asarray(trained) - start).max() > 1e-5  # DCEC moved its centres from the k-means start


def test_a_small_unlabelled_folder_runs_with_fitted_batches_and_writes_each_images_cluster(digits, tmp_path):
  """The README's folder command on 50 unlabelled images: batch sizes 256 are lowered to fit (not refused after
  k-means ran), and assignments.csv gives every image its cluster and confidence per method."""
  from PIL import Image
  photos = tmp_path / 'photos'
  photos.mkdir()
  for i in range(50):
    Image.fromarray((digits.x[i, ..., 0] * 255).astype(np.uint8)).save(photos / f'img_{i:02d}.png')
  config = _small_config(seeds=1, methods='kmeans,ae_kmeans,dec')
  config.dataset, config.data_dir, config.image_size, config.n_clusters = 'folder', str(photos), 8, 3
  assert config.pretrain.batch_size == config.cluster.batch_size == 256
  payload = benchmark.run(config, tmp_path / 'run')
  assert payload['complete']
  assert json.loads((tmp_path / 'run' / 'config.json').read_text())['pretrain']['batch_size'] == 50
  with open(tmp_path / 'run' / 'assignments.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['image'] for r in rows] == [f'img_{i:02d}.png' for i in range(50)]
  assert set(rows[0]) == {'image', 'kmeans_cluster', 'ae_kmeans_cluster', 'dec_cluster', 'dec_confidence'}
  assert {int(r['dec_cluster']) for r in rows} <= {0, 1, 2}
  assert all(1 / 3 - 1e-6 <= float(r['dec_confidence']) <= 1.0 for r in rows)
  assert 'n/a' in (tmp_path / 'run' / 'table.md').read_text()


def test_processes_split_the_seeds_and_give_the_trials_of_one_process(tmp_path):
  """--processes=2 (what 'auto' picks on this 2-core CPU): a worker takes seeds beside the launcher, the
  launcher's table is complete, and every trial equals that of one single-threaded process."""
  tiny = ['--config.seeds=3', '--config.methods=kmeans,ae_kmeans,dec', '--config.pretrain.epochs=2',
          '--config.model.dims=(32,16,6)', '--config.cluster.maxiter=60', '--config.cluster.kmeans_n_init=2']
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_cpu_multi_thread_eigen=false')
  runs = {}
  for name, processes in (('two', '2'), ('one', '1')):
    proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', *tiny, f'--processes={processes}',
                           f'--workdir={tmp_path / name}'], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs[name] = (proc.stderr, {(r['seed'], r['method']): r for r in results.read_trials(tmp_path / name / 'trials.csv')})
  err, two = runs['two']
  assert '2 processes share the seeds' in err and (tmp_path / 'two' / 'worker_1.log').exists()
  assert 'trial' in (tmp_path / 'two' / 'worker_1.log').read_text()  # the worker really ran trials
  assert json.loads((tmp_path / 'two' / 'summary.json').read_text())['complete']
  one = runs['one'][1]
  assert set(two) == set(one) and len(one) == 9
  for key in one:
    assert [two[key][m] for m in ('acc', 'nmi', 'ari')] == [one[key][m] for m in ('acc', 'nmi', 'ari')], key


@pytest.mark.parametrize('requested, seeds, distributed, expected', [
    ('auto', 10, True, 1), ('3', 2, False, 2), ('1', 10, False, 1)])
def test_process_count(requested, seeds, distributed, expected):
  from experiments import workers
  assert workers.count(requested, seeds, distributed) == expected


@pytest.mark.parametrize('requested, distributed', [('0', False), ('two', False), ('2', True)])
def test_bad_process_counts_are_refused(requested, distributed):
  from experiments import workers
  with pytest.raises(UserError, match='--processes'):
    workers.count(requested, 4, distributed)

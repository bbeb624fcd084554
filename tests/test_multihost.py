"""Several hosts: 2 processes x 2 CPU devices (jax.distributed on localhost, gloo) give the trials of 1 process x
4 devices, write each output file once, and resume DEC from a checkpoint."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT
from udl_jax import records, results

FLAGS = ['--config=configs/benchmark.py', '--config.seeds=1', '--config.methods=kmeans,ae_kmeans,dec',
         '--config.pretrain.epochs=2', '--config.pretrain.batch_size=128', '--config.model.dims=(32,16,6)',
         '--config.cluster.maxiter=90', '--config.cluster.tol=0', '--config.cluster.checkpoint_every=2',
         '--config.cluster.batch_size=128', '--config.cluster.kmeans_n_init=2',
         '--config.keep_checkpoints=keep']
TIMEOUT = 240  # a hang guard (a process waiting forever for its peer), not a speed check


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(workdir, devices: int, process: tuple[int, int, int] | None = None) -> subprocess.Popen:
  """The benchmark launcher on `devices` CPU devices; `process` = (id, count, port) joins a distributed job."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  flags = FLAGS + [f'--workdir={workdir}']
  if process:
    pid, count, port = process
    env.update(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES=str(count),
               JAX_PROCESS_ID=str(pid))
    flags.append('--config.distributed=True')
  return subprocess.Popen([sys.executable, '-m', 'experiments.benchmark', *flags], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen]) -> list[str]:
  errs = []
  for p in procs:
    try:
      _, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('a process of the job hung')
    assert p.returncode == 0, err[-4000:]
    errs.append(err)
  return errs


def _two_processes(workdir) -> list[str]:
  port = _free_port()
  return _wait([_start(workdir, 2, (i, 2, port)) for i in range(2)])


def _files(workdir) -> list[str]:
  return sorted(str(p.relative_to(workdir)) for p in workdir.rglob('*')
                if p.is_file() and 'checkpoints' not in p.parts and p.name != '.lock' and 'params' not in p.parts)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{'one': 1 process x 4 devices, 'two': 2 processes x 2 devices, interrupted in DEC and resumed}."""
  root = tmp_path_factory.mktemp('multihost')
  one, two = root / 'one', root / 'two'
  t0 = time.perf_counter()
  single = _start(one, 4)
  first_errs = _two_processes(two)
  _wait([single])
  # What a kill -9 after DEC's checkpoint of iteration 60 leaves: the newest checkpoint and everything after it gone.
  seed_dir = two / 'seed_0'
  newest = max(int(p.name) for p in (seed_dir / 'dec' / 'checkpoints').iterdir() if p.name.isdigit())
  shutil.rmtree(seed_dir / 'dec' / 'checkpoints' / str(newest))
  for path in ('dec_labels.npz', 'dec/params', 'dec/metrics.jsonl'):
    shutil.rmtree(seed_dir / path) if (seed_dir / path).is_dir() else (seed_dir / path).unlink()
  kept = [r for r in records.read_seed(two, 0) if r['method'] != 'dec']
  results.write_trials(seed_dir / 'trials.csv', kept)
  resume_errs = _two_processes(two)
  return {'one': one, 'two': two, 'first_errs': first_errs, 'resume_errs': resume_errs,
          'seconds': time.perf_counter() - t0}


def test_two_processes_equal_one_process(runs):
  one, two = results.read_trials(runs['one'] / 'trials.csv'), results.read_trials(runs['two'] / 'trials.csv')
  assert [(r['seed'], r['method']) for r in one] == [(r['seed'], r['method']) for r in two] == \
      [(0, 'kmeans'), (0, 'ae_kmeans'), (0, 'dec')]
  for a, b in zip(one, two):
    for key in ('acc', 'nmi', 'ari'):
      assert abs(a[key] - b[key]) < 1e-4, (a, b)
  assert two[2]['iterations'] == one[2]['iterations'] == 90
  for method in ('kmeans', 'ae_kmeans', 'dec'):
    np.testing.assert_array_equal(np.load(runs['one'] / 'seed_0' / f'{method}_labels.npz')['labels'],
                                  np.load(runs['two'] / 'seed_0' / f'{method}_labels.npz')['labels'])


def test_dec_resumed_from_its_checkpoint(runs):
  resumed = [line for line in runs['resume_errs'][0].splitlines() if 'dec: resumed from' in line]
  assert len(resumed) == 1 and 'at iteration 60' in resumed[0], runs['resume_errs'][0][-3000:]
  assert not any('epoch' in line for line in runs['resume_errs'][0].splitlines())  # the saved autoencoder


def test_one_writer_one_copy_of_each_file(runs):
  one, two = runs['one'], runs['two']
  assert _files(two) == _files(one)
  assert not list(two.rglob('*.tmp'))
  log = (two / 'log.txt').read_text().splitlines()
  # Each progress line once per run (the first run and the resume), not once per process.
  assert sum('benchmark digits: 1797 images' in line for line in log) == 2
  assert sum('trial 1/3 seed 0 kmeans' in line for line in log) == 1
  assert sum('trial 3/3 seed 0 dec' in line for line in log) == 2
  for errs in (runs['first_errs'], runs['resume_errs']):
    assert 'trial' not in errs[1] and 'epoch' not in errs[1], errs[1][-2000:]  # process 1 logs no progress
  print(f"\n3 runs (1x4 beside 2x2, then the 2x2 resume) took {runs['seconds']:.1f} s")

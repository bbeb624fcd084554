"""Several single-threaded processes on one CPU host sharing a benchmark's seeds (`--processes`).

On a CPU, two single-threaded processes, each pinned to its core and training its own seed, get more done than
one process whose matmuls XLA spreads over both cores (benchmarks/README.md). The launcher starts itself again
as N-1 workers, one per core, and works on the first core itself; the seed locks of `udl_jax.records` split
the seeds between them (a process skips a seed another is working on), and the launcher, which waits for every
seed, writes the table. The numbers are those of any single-threaded run: each seed's trials do not depend on
which process ran them.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from udl_jax import log
from udl_jax.errors import UserError

SINGLE_THREADED = '--xla_cpu_multi_thread_eigen=false'
ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm7_plugin', 'libtpu')


def _cores() -> list[int]:
  return sorted(os.sched_getaffinity(0))


def _cpu_only() -> bool:
  """Whether JAX will run on the CPU: asked for, or no accelerator plugin installed (decided without starting
  JAX, whose threading must be chosen before it starts)."""
  platforms = os.environ.get('JAX_PLATFORMS', '').lower()
  if platforms:
    return platforms == 'cpu'
  return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def count(requested: str, seeds: int, distributed: bool) -> int:
  """How many processes: 'auto' is one per usable core on a CPU-only host (no more than the seeds), else 1."""
  if requested == 'auto':
    return max(1, min(len(_cores()), seeds)) if _cpu_only() and not distributed else 1
  try:
    n = int(requested)
  except ValueError:
    n = 0
  if n < 1:
    raise UserError(f"--processes must be 'auto' or a number >= 1, got '{requested}'")
  if n > 1 and distributed:
    raise UserError('--processes shares one machine between processes; a multi-host job (--config.distributed) '
                    'is already one process per host: use --processes=1')
  return min(n, seeds)


def start(n: int, workdir: Path) -> list[subprocess.Popen]:
  """Makes this process single-threaded on the first core (call it before JAX starts its backend) and starts n-1
  workers on the next cores, each logging to WORKDIR/worker_I.log (their per-step lines go to log.txt too).

  A worker outlives a killed launcher: it finishes its seed and its records, which the next run reuses."""
  cores = _cores()
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {SINGLE_THREADED}".strip()
  os.sched_setaffinity(0, {cores[0]})
  workdir.mkdir(parents=True, exist_ok=True)
  workers = []
  for i in range(1, n):
    with open(workdir / f'worker_{i}.log', 'w') as out:
      worker = subprocess.Popen([sys.executable, '-m', 'experiments.benchmark', *sys.argv[1:], '--processes=1',
                                 '--worker'], stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    os.sched_setaffinity(worker.pid, {cores[i % len(cores)]})  # at once: it is still importing
    workers.append(worker)
  log.info('%d processes share the seeds, one per core, single-threaded (--processes=1: one process)', n)
  return workers


def stop(workers: list[subprocess.Popen], workdir: Path, finished: bool) -> None:
  """Waits for the workers (stops them first when this process did not finish); names any that failed."""
  for i, worker in enumerate(workers, start=1):
    if not finished:
      worker.send_signal(signal.SIGINT)
    if worker.wait() not in (0, 130) and finished:
      log.info('worker %d failed (exit %d): see %s', i, worker.returncode, workdir / f'worker_{i}.log')

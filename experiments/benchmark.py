"""Seed-averaged clustering benchmark: KMeans, AE+KMeans, DEC, IDEC on one dataset.

  python -m experiments.benchmark                      # digits, 10 seeds; prints the table
  python -m experiments.benchmark --config=configs/benchmark.py:dataset=mnist --config.seeds=3 --workdir=runs/mnist

Re-running the same command in the same workdir resumes. See configs/benchmark.py for every option.
"""

from pathlib import Path

from absl import flags

from experiments import launch, workers
from udl_jax import benchmark, data

_CONFIG = launch.define_config('configs/benchmark.py', 'Benchmark config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (default: runs/benchmark_<dataset>, with _holdout '
                                'for the holdout protocol).')
_PROCESSES = flags.DEFINE_string(
    'processes', 'auto', "Processes on this machine sharing the seeds. 'auto': one per CPU core on a host "
    'without an accelerator (each single-threaded and pinned: faster than one multi-threaded process), one '
    'with an accelerator or for a multi-host job; or a number.')
_WORKER = flags.DEFINE_bool('worker', False, 'Internal: a process started by --processes (runs seeds, no table).')


def main(argv):
  launch.check_no_positional(argv)
  config = launch.resolved_config(_CONFIG)
  workdir = _WORKDIR.value or f"runs/benchmark_{config.dataset}{'_holdout' if config.protocol == 'holdout' else ''}"
  if launch.PRINT_CONFIG.value:
    launch.print_config(config, benchmark.plan(config, workdir))
    return
  data.locate_from_config(config)  # missing data fails here, before the workdir exists
  if _WORKER.value:
    benchmark.run(config, launch.prepare_workdir(workdir, config.distributed), write_tables=False)
    return
  n = workers.count(_PROCESSES.value, config.seeds, config.distributed)
  started = workers.start(n, Path(workdir)) if n > 1 else []  # before JAX starts: it makes this one single-threaded
  workdir = launch.prepare_workdir(workdir, config.distributed)
  finished = False
  try:
    benchmark.run(config, workdir, processes=n)
    finished = True
  finally:
    workers.stop(started, workdir, finished)


if __name__ == '__main__':
  launch.run(main)

"""Seed-averaged clustering benchmark: KMeans, AE+KMeans, DEC, IDEC on one dataset.

  python -m experiments.benchmark                      # digits, 10 seeds; prints the table
  python -m experiments.benchmark --config=configs/benchmark.py:dataset=mnist --config.seeds=3 --workdir=runs/mnist

Re-running the same command in the same workdir resumes. See configs/benchmark.py for every option.
"""

from absl import flags

from experiments import launch
from udl_jax import benchmark

_CONFIG = launch.define_config('configs/benchmark.py', 'Benchmark config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (default: runs/benchmark_<dataset>, with _holdout '
                                'for the holdout protocol).')


def main(argv):
  launch.check_no_positional(argv)
  config = launch.resolved_config(_CONFIG)
  workdir = _WORKDIR.value or f"runs/benchmark_{config.dataset}{'_holdout' if config.protocol == 'holdout' else ''}"
  if launch.PRINT_CONFIG.value:
    launch.print_config(config, benchmark.plan(config, workdir))
    return
  benchmark.run(config, launch.prepare_workdir(workdir, config.distributed))


if __name__ == '__main__':
  launch.run(main)

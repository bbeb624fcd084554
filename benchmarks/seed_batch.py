"""Wall time of a whole benchmark run, seeds batched (`--config.seed_batch=S`) against seed by seed, in one run.

  python -m benchmarks.seed_batch                                    # digits preset, 10 seeds, S = 10
  python -m benchmarks.seed_batch --dataset=mnist_test --set=pretrain.epochs=10 --set=cluster.maxiter=1000
  XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 1 python -m benchmarks.seed_batch   # a CPU, as measured

Runs `experiments.benchmark` as a user would, in one process (`--processes=1`), once with `seed_batch=1` and
once with `seed_batch=S`, one after the other in fresh workdirs under --workdir (nothing else should run
beside it). Writes OUT/<dataset>.json (and .md): the machine, both commands, wall times, the ratio and each
mode's seed-averaged table. The two tables agree to float rounding grown over the run (batched matmuls round
differently; tests/test_seed_batch.py checks each seed against itself alone), as a change of thread count does.
"""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from benchmarks import throughput
from udl_jax import log, results

_DATASET = flags.DEFINE_string('dataset', 'digits', 'Dataset preset of configs/benchmark.py.')
_SEEDS = flags.DEFINE_integer('seeds', 10, 'Seeds of the table.')
_BATCH = flags.DEFINE_integer('batch', 0, 'Seeds per batch of the batched run (0: all of them).')
_METHODS = flags.DEFINE_string('methods', '', "Methods of the table ('': the config's default).")
_SET = flags.DEFINE_multi_string('set', [], 'KEY=VALUE: a config override for both runs, e.g. pretrain.epochs=10.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/seed_batch', 'Parent folder of the two (fresh) workdirs.')
_OUT = flags.DEFINE_string('dest', 'benchmarks/results', 'Folder for <dataset>.json and <dataset>.md.')


def command(workdir: Path, seed_batch: int) -> list[str]:
  """The benchmark command of one mode."""
  args = [sys.executable, '-m', 'experiments.benchmark', f'--config=configs/benchmark.py:dataset={_DATASET.value}',
          f'--config.seeds={_SEEDS.value}', f'--config.seed_batch={seed_batch}', '--processes=1',
          f'--workdir={workdir}']
  if _METHODS.value:
    args.append(f'--config.methods={_METHODS.value}')
  return args + [f'--config.{kv}' for kv in _SET.value]


def run_mode(seed_batch: int) -> dict:
  """Runs one mode from scratch: {command, wall_seconds, table (the summary's methods)}."""
  workdir = Path(_WORKDIR.value) / f'{_DATASET.value}_seed_batch_{seed_batch}'
  shutil.rmtree(workdir, ignore_errors=True)
  args = command(workdir, seed_batch)
  log.info('seed_batch=%d: %s', seed_batch, shlex.join(args[1:]))
  t0 = time.perf_counter()
  done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  wall = time.perf_counter() - t0
  if done.returncode:
    raise SystemExit(f'seed_batch={seed_batch} failed ({done.returncode}):\n{done.stderr[-3000:]}')
  summary = json.loads((workdir / 'summary.json').read_text())
  log.info('seed_batch=%d: %.1f s wall', seed_batch, wall)
  return {'command': shlex.join(['python'] + args[1:]), 'wall_seconds': wall, 'table': summary['methods']}


def markdown(report: dict) -> str:
  lines = [f"# Seed batching, {report['dataset']}, {report['seeds']} seeds", '',
           f"{report['date']}, {report['machine'].get('cpu', '?')}, backend {report['machine'].get('backend', '?')}"
           f", XLA_FLAGS `{report['machine'].get('xla_flags', '')}`", '',
           '| seed_batch | wall (s) | ' + ' | '.join(f'{m} NMI' for m in report['modes'][0]['table']) + ' |',
           '| --- | --- | ' + ' | '.join('---' for _ in report['modes'][0]['table']) + ' |']
  for mode in report['modes']:
    nmi = ' | '.join(f"{s['nmi']['mean']:.3f} ± {s['nmi']['std']:.3f}" if s['nmi']['mean'] is not None else 'n/a'
                     for s in mode['table'].values())
    lines.append(f"| {mode['seed_batch']} | {mode['wall_seconds']:.1f} | {nmi} |")
  lines += ['', f"Batched over sequential wall time: x{report['batched_over_sequential']:.3f}", '', 'Commands:', '']
  lines += [f"    {mode['command']}" for mode in report['modes']]
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  batch = _BATCH.value or _SEEDS.value
  modes = []
  for seed_batch in (1, batch):
    modes.append({'seed_batch': seed_batch, **run_mode(seed_batch)})
  report = {'command': shlex.join(['python', '-m', 'benchmarks.seed_batch'] + sys.argv[1:]),
            'date': datetime.datetime.now().isoformat(timespec='seconds'), 'machine': throughput.machine(),
            'dataset': _DATASET.value, 'seeds': _SEEDS.value, 'modes': modes,
            'batched_over_sequential': modes[1]['wall_seconds'] / modes[0]['wall_seconds']}
  out = Path(_OUT.value)
  results.write_json(out / f'{_DATASET.value}.json', report)
  results.write_atomic(out / f'{_DATASET.value}.md', markdown(report))
  print(markdown(report))


if __name__ == '__main__':
  app.run(main)

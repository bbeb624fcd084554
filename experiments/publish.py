"""Copy a finished run's table and figures into results/NAME with the command that produced it.

  python -m experiments.publish --workdir=runs/benchmark_digits --name=digits \
      --command="python -m experiments.benchmark --workdir=runs/benchmark_digits"

Copies what exists of table.md, trials.csv, summary.json, report.html, clusters.png, log.txt (benchmarks) or summary.json,
metrics.jsonl and the PNG figures (autoencoders), and writes COMMAND.md: the command, the wall time from the
run's own records, and the software versions. Numbers are never edited: they are the run's files.
"""

import json
import shutil
from pathlib import Path

from absl import flags

from experiments import launch
from udl_jax import results
from udl_jax.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'Finished run folder.', required=True)
_NAME = flags.DEFINE_string('name', None, 'Destination: results/NAME.', required=True)
_COMMAND = flags.DEFINE_string('command', None, 'The exact command that produced the run.', required=True)
_NOTE = flags.DEFINE_string('note', '', 'How the run came about when one command does not say it all (e.g. '
                            'trials redone after a settings change); written as a "Note:" line.')

FILES = ('table.md', 'trials.csv', 'summary.json', 'report.html', 'metrics.jsonl', 'assignments.csv', 'metrics.json',
         'log.txt')


def check_finished(src: Path) -> None:
  """A benchmark table is published only when it holds every trial its command asked for."""
  if (src / 'summary.json').exists():
    reason = results.unfinished(json.loads((src / 'summary.json').read_text()))
    if reason:
      raise UserError(f'{src} is unfinished: {reason} (re-run its command to finish it, then publish)')


def main(argv):
  launch.check_no_positional(argv)
  src, dest = Path(_WORKDIR.value), Path('results') / _NAME.value
  if not (src / 'summary.json').exists() and not (src / 'assignments.csv').exists():
    raise UserError(f'{src} has neither summary.json nor assignments.csv: the run is not finished')
  check_finished(src)
  dest.mkdir(parents=True, exist_ok=True)
  for path in [src / f for f in FILES] + sorted(src.glob('*.png')):
    if path.exists():
      shutil.copy2(path, dest / path.name)
  summary = json.loads((src / 'summary.json').read_text()) if (src / 'summary.json').exists() else {
      'environment': results.environment()}
  env = summary.get('environment', {})
  lines = [f'# {_NAME.value}', '', 'Produced by:', '', '```bash', _COMMAND.value, '```', '']
  if 'methods' in summary:
    rows = results.read_trials(src / 'trials.csv')
    pretrain = {r['seed']: r['pretrain_seconds'] for r in rows if r['pretrain_seconds'] is not None}
    total = sum(r['seconds'] for r in rows) + sum(pretrain.values())
    lines.append(f"Compute time of all trials (each seed's pretraining counted once): {total / 60:.1f} min; "
                 f"seeds {summary['seeds']}; protocol {summary['protocol']}.")
  elif 'train_seconds' in summary:
    lines.append(f"Training time: {summary['train_seconds'] / 60:.1f} min over {summary['epochs_run']} epochs.")
  if _NOTE.value:
    lines += ['', f'Note: {_NOTE.value}']
  lines += ['', f"Machine: {env.get('platform')}, {env.get('cpu_count')} CPU cores, backend {env.get('backend')} "
            f"({env.get('device_kind')} x{env.get('device_count')}); Python {env.get('python')}.", '',
            'Packages: ' + ', '.join(f'{k} {v}' for k, v in env.get('packages', {}).items()), '']
  results.write_atomic(dest / 'COMMAND.md', '\n'.join(lines))
  print(f'published {src} -> {dest}')


if __name__ == '__main__':
  launch.run(main)

"""What every launcher shares: one clear line instead of a traceback for user errors, a log file in the workdir."""

import logging
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from udl_jax import log
from udl_jax.errors import UserError


def check_no_positional(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; options are flags such as --config.seeds=3')


def prepare_workdir(path: str) -> Path:
  """Creates the workdir and mirrors progress lines into WORKDIR/log.txt."""
  workdir = Path(path)
  workdir.mkdir(parents=True, exist_ok=True)
  handler = logging.FileHandler(workdir / 'log.txt')
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
  log.logger.addHandler(handler)
  return workdir


def run(main) -> None:
  """absl's app.run, with UserError (bad names, missing data, config typos) reported in one line."""
  def guarded(argv):
    if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO; -v 0 brings it back
      absl_logging.set_verbosity(absl_logging.WARNING)
    try:
      main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
  app.run(guarded)

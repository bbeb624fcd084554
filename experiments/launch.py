"""What every launcher shares: one clear line instead of a traceback for user errors, a log file in the workdir."""

import logging
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from udl_jax import log, parallel
from udl_jax.errors import UserError


def check_no_positional(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; options are flags such as --config.seeds=3')


def prepare_workdir(path: str, distributed: bool = False) -> Path:
  """Joins the multi-process job first when `distributed`; then process 0 creates the workdir and mirrors its
  progress lines into WORKDIR/log.txt (the other processes log warnings to their own stderr only)."""
  if distributed:
    parallel.initialize_distributed()
  workdir = Path(path)
  if not parallel.is_main_process():
    return workdir
  workdir.mkdir(parents=True, exist_ok=True)
  handler = logging.FileHandler(workdir / 'log.txt')
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
  log.logger.addHandler(handler)
  return workdir


def _fail(message) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _config_error(e: BaseException) -> str:
  while isinstance(e, (AttributeError, KeyError)) and e.args and isinstance(e.args[0], BaseException):
    e = e.args[0]  # ml_collections wraps: AttributeError(KeyError("'seedz'\nDid you mean ..."))
  text = e.args[0] if isinstance(e, (AttributeError, KeyError)) and e.args else str(e)
  return f"unknown config key {str(text).replace(chr(10), '; ')}"


def define_config(default: str, help_text: str):
  """`--config` as a locked config file; ml_collections reads the --config.KEY overrides from argv right here."""
  try:
    return config_flags.DEFINE_config_file('config', default, help_text, lock_config=True)
  except UserError as e:
    _fail(e)
  except (AttributeError, KeyError) as e:
    _fail(_config_error(e))


def _parse_flags(argv):
  """absl's flag parsing; a bad --config (get_config's UserError, an unknown --config.KEY) in one line."""
  try:
    return app.parse_flags_with_usage(argv)
  except UserError as e:
    _fail(e)
  except (AttributeError, KeyError) as e:  # ml_collections, for --config.KEY where the config has no KEY
    _fail(_config_error(e))


def run(main) -> None:
  """absl's app.run, with UserError (bad names, missing data, config typos) reported in one line."""
  def guarded(argv):
    if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO; -v 0 brings it back
      absl_logging.set_verbosity(absl_logging.WARNING)
    try:
      main(argv)
    except UserError as e:
      _fail(e)
    except KeyboardInterrupt:
      print('\ninterrupted; finished trials and the last checkpoint are kept: re-run the same command to resume',
            file=sys.stderr)
      sys.exit(130)
  app.run(guarded, flags_parser=_parse_flags)

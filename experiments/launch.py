"""What every launcher shares: one clear line instead of a traceback for user errors, a log file in the workdir,
the config as the user meant it (`--config.dataset=X` applies X's preset as `:dataset=X` does), --print_config."""

import importlib.util
import logging
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from udl_jax import config as udl_config, log, parallel
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


PRINT_CONFIG = flags.DEFINE_bool('print_config', False, 'Print the resolved config (and the planned trials) and '
                                  'exit without running anything.')
# Config-file arguments (`--config=FILE:KEY=VALUE`) that are also config keys: overriding the key with a flag
# rebuilds the config from the file with that argument, so the preset it selects follows it.
ARGUMENT_KEYS = {'dataset': 'dataset', 'model': 'model.name', 'reference': 'reference'}


def _load_config_module(path: str):
  spec = importlib.util.spec_from_file_location('udl_config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def resolved_config(holder):
  """The config of `--config` as the user meant it: a flag overriding an argument key (--config.dataset=mnist)
  is applied as that argument (`:dataset=mnist`: its preset), then every --config.KEY flag on top."""
  flag = flags.FLAGS[holder.name]
  overrides = config_flags.get_override_values(flag)
  path, _, arg = flag.config_filename.partition(':')
  module = _load_config_module(path)
  as_arguments = {key: overrides[dotted] for key, dotted in ARGUMENT_KEYS.items()
                  if key in getattr(module, 'ARGUMENTS', ()) and dotted in overrides}
  if not as_arguments:
    return holder.value
  try:
    args = {**udl_config.parse_arg(arg), **as_arguments}
    config = module.get_config(','.join(f'{k}={v}' for k, v in args.items()))
    config.update_from_flattened_dict(overrides)
  except UserError as e:
    _fail(e)
  return config


def print_config(config, plan: str = '') -> None:
  """--print_config: the resolved config (as --config.KEY=VALUE would set it) and what would run."""
  print(config)
  if plan:
    print(plan)


def _keys_help(path: str) -> str:
  """Every key of the default config with its default value, for --help (the config file says what each means)."""
  try:
    flat = _load_config_module(path).get_config().to_dict()
  except Exception:  # noqa: BLE001  (--help must work even if the default config cannot be built here)
    return ''
  def walk(d, prefix=''):
    for key, value in d.items():
      yield from walk(value, f'{prefix}{key}.') if isinstance(value, dict) else [f'{prefix}{key}={value}']
  return (f'Keys (--config.KEY=VALUE; {path} says what each means; --print_config shows the resolved '
          'values):\n  ' + '\n  '.join(walk(flat)))


def define_config(default: str, help_text: str):
  """`--config` as a locked config file; ml_collections reads the --config.KEY overrides from argv right here."""
  try:
    holder = config_flags.DEFINE_config_file('config', default, f'{help_text}\n{_keys_help(default)}',
                                             lock_config=True)
    # Listed by --help, which shows the main module's flags (this one is defined here, in launch).
    flags.FLAGS.register_flag_by_module(sys.argv[0], flags.FLAGS['config'])
    flags.FLAGS.register_flag_by_module(sys.argv[0], flags.FLAGS['print_config'])
    return holder
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


def enable_compilation_cache() -> None:
  """Keeps compiled XLA programs on disk (~/.cache/udl_jax/xla, or $JAX_COMPILATION_CACHE_DIR): every seed after
  the first, and every later run, skips the compilation of the same programs (seconds per seed on a CPU)."""
  import jax  # here, not at the top: importing the launcher must not start JAX
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str(Path.home() / '.cache' / 'udl_jax' / 'xla'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)


def run(main) -> None:
  """absl's app.run, with UserError (bad names, missing data, config typos) reported in one line."""
  def guarded(argv):
    enable_compilation_cache()
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

"""A workdir's bookkeeping: trial records, which settings they were made with, and who may write them.

  WORKDIR/config.json            the settings every trial shares (all but the methods' clustering settings)
  WORKDIR/seed_S/trials.csv      the finished trials of seed S: the record
  WORKDIR/seed_S/methods.json    {method: the clustering settings its trial of seed S was made with}
  WORKDIR/trials.csv             the union of every seed's record (for reading; rewritten from them)

One writer per seed: a process holds `seed_S/.lock` (an `fcntl` lock, released by the kernel when the holder
dies, even by kill -9) while it works on seed S, and `WORKDIR/.lock` while it writes the shared files. Record
updates re-read the file under the lock and merge, so processes running different methods of one seed, or
different seeds, never drop each other's rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from udl_jax import config as udl_config, log, methods, results
from udl_jax.errors import UserError

# Keys that may differ between two runs in one workdir: they select work, they do not change a trial.
SELECTION_KEYS = ('seeds', 'first_seed', 'methods', 'imports')


class Busy(UserError):
  """A lock taken without waiting is held by another process."""


@contextlib.contextmanager
def locked(path: Path, what: str, wait: bool = True) -> Iterator[None]:
  """Holds an exclusive lock on `path`, waiting (and saying so) while another process holds it.

  With `wait=False`, a held lock is a `Busy` error instead.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or 'another process'
      if not wait:
        raise Busy(f'{what} is in use by {holder}; wait for it to finish, or use another --workdir')
      log.info('waiting for %s: %s is working on it', what, holder)
      fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    f.truncate()
    f.write(f'process {os.getpid()} on {os.uname().nodename}')
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def seed_lock(workdir: Path, seed: int, wait: bool = True):
  return locked(workdir / f'seed_{seed}' / '.lock', f'seed {seed} of {workdir}', wait)


def workdir_lock(workdir: Path):
  return locked(workdir / '.lock', f'the shared files of {workdir}')


def remove_stale_temporaries(folder: Path, recursive: bool = False) -> None:
  """Deletes the `.NAME.*.tmp` files of writes killed half-way in `folder` (call it holding folder's lock)."""
  for tmp in (folder.rglob if recursive else folder.glob)('.*.tmp'):
    if tmp.is_file():
      tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ records

def read_seed(workdir: Path, seed: int) -> list[dict]:
  return results.read_trials(workdir / f'seed_{seed}' / 'trials.csv')


def read_all(workdir: Path) -> list[dict]:
  """Every finished trial in `workdir`, from the seed folders' trials.csv files.

  Workdirs from before per-seed records kept only the top-level trials.csv: rows of a seed folder that has no
  record yet are moved into it first (rows of a deleted seed folder are dropped: that seed runs again).
  """
  legacy = {}
  for row in results.read_trials(workdir / 'trials.csv'):
    legacy.setdefault(row['seed'], []).append(row)
  for seed, rows in legacy.items():
    seed_dir = workdir / f'seed_{seed}'
    if seed_dir.is_dir() and not (seed_dir / 'trials.csv').exists():
      results.write_trials(seed_dir / 'trials.csv', rows)
  return [r for path in sorted(workdir.glob('seed_*/trials.csv')) for r in results.read_trials(path)]


def write_union(workdir: Path) -> None:
  """Rewrites WORKDIR/trials.csv from the seed records."""
  with workdir_lock(workdir):
    results.write_trials(workdir / 'trials.csv', read_all(workdir))


def add_trial(workdir: Path, row: dict, settings: dict | None) -> None:
  """Adds (or replaces) one finished trial in its seed's record, with the method settings it was made with.

  Call it holding the seed's lock: the record is re-read here, so rows other processes added are kept.
  """
  seed_dir = workdir / f"seed_{row['seed']}"
  rows = [r for r in read_seed(workdir, row['seed']) if r['method'] != row['method']] + [row]
  if settings is not None:
    recorded = read_method_settings(seed_dir)
    recorded[row['method']] = settings
    results.write_json(seed_dir / 'methods.json', recorded)
  results.write_trials(seed_dir / 'trials.csv', rows)


def forget_trials(workdir: Path, seed: int, methods: Iterable[str]) -> None:
  """Drops the trials of `methods` from seed's record (atomically), then their files. Hold the seed's lock."""
  methods = set(methods)
  seed_dir = workdir / f'seed_{seed}'
  rows = read_seed(workdir, seed)
  kept = [r for r in rows if r['method'] not in methods]
  if len(kept) < len(rows):
    results.write_trials(seed_dir / 'trials.csv', kept)
  for method in methods:
    shutil.rmtree(seed_dir / method, ignore_errors=True)
    (seed_dir / f'{method}_labels.npz').unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- settings of the trials

def read_method_settings(seed_dir: Path) -> dict:
  path = seed_dir / 'methods.json'
  return json.loads(path.read_text()) if path.exists() else {}


def record_legacy_settings(seed_dir: Path, legacy_cluster: dict) -> None:
  """Writes methods.json for a seed recorded before it existed: its trials were made with `legacy_cluster`."""
  if (seed_dir / 'methods.json').exists() or not (seed_dir / 'trials.csv').exists():
    return
  made = {r['method'] for r in results.read_trials(seed_dir / 'trials.csv')} - set(methods.BASELINES)
  results.write_json(seed_dir / 'methods.json',
                     {m: udl_config.method_settings(legacy_cluster, m) for m in sorted(made)})


def stale_methods(workdir: Path, seed: int, requested: Iterable[str], cluster: dict) -> list[str]:
  """Requested methods whose finished trial of `seed` was made with other clustering settings than `cluster`.

  Methods not requested are never touched, whatever their settings.
  """
  recorded = read_method_settings(workdir / f'seed_{seed}')
  return [m for m in requested if m in recorded and recorded[m] != udl_config.method_settings(cluster, m)]


def discard_unfinished(workdir: Path) -> None:
  """Deletes what a run without finished trials left (checkpoints of other settings), seed by seed.

  Refuses while another process works on one of the seeds.
  """
  for seed_dir in sorted(workdir.glob('seed_*')):
    with locked(seed_dir / '.lock', f'{seed_dir}', wait=False):
      for child in seed_dir.iterdir():
        if child.name != '.lock':
          shutil.rmtree(child) if child.is_dir() else child.unlink()


def changed_settings(before: dict, now: dict, may_change: Iterable[str], prefix: str = '') -> list[str]:
  """Dotted keys whose values differ between two config dicts, except those in `may_change` (dotted too)."""
  changed = []
  for key in sorted(set(before) | set(now)):
    name = prefix + key
    if name in may_change:
      continue
    if isinstance(before.get(key), dict) and isinstance(now.get(key), dict):
      changed += changed_settings(before[key], now[key], may_change, f'{name}.')
    elif before.get(key, udl_config.ADDED_DEFAULTS.get(name)) != now.get(key):
      changed.append(name)
  return changed


def as_json(config) -> dict:
  """The config as config.json holds it (tuples as lists), for comparing with a saved one."""
  return json.loads(json.dumps(config.to_dict(), default=str))


def saved_config(workdir: Path) -> dict | None:
  path = workdir / 'config.json'
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f'{path} is not valid JSON ({e}); delete it if the workdir holds no finished work') from e


def check_resumable(workdir: Path, before: dict | None, config, may_change: tuple[str, ...], allowed: str,
                    has_finished_work: bool) -> bool:
  """Whether `config` may run in `workdir`: True when the saved run's unfinished work must be discarded first.

  A workdir whose saved config differs only in `may_change` (dotted keys) resumes. One that differs in more is
  refused if it holds finished work (that would mix incomparable results), and otherwise (a first run that
  failed, say with a learning rate too high) accepts the new config once what the failed run left is discarded.
  `before` is the workdir's `saved_config`; `allowed` says in words what may change, for the refusal.
  """
  if before is None:
    return False
  changed = changed_settings(before, as_json(config), may_change)
  if not changed:
    return False
  if has_finished_work:
    raise UserError(f'{workdir} holds a run with different settings ({", ".join(changed)}); use a new '
                    f'--workdir, or the same settings (only {allowed} may change when resuming)')
  log.info('%s holds no finished work of its earlier settings (%s differ): starting over with the new ones',
           workdir, ', '.join(changed))
  return True

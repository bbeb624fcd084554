"""The one place that talks to orbax: save and restore a pytree plus JSON metadata, atomically.

Orbax writes each step into a temporary directory and renames it when complete, so a kill while saving leaves
the previous checkpoint as the latest loadable one (and a `<step>.orbax-checkpoint-tmp-*` folder, which the
manager deletes when it is next created). A step that is complete but later damaged (a truncated file, a full
disk) is moved aside to `<checkpoints dir>.damaged/` and the run resumes from the step before it.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from udl_jax import log, parallel
from udl_jax.errors import UserError


def manager(directory: str | Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
  # cleanup_tmp_directories: without it, the folders of saves killed midway pile up (orbax skips them).
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options)


@contextlib.contextmanager
def _ctrl_c_deferred():
  """Holds back Ctrl-C (SIGINT) until orbax is done, then raises it.

  Interrupted inside a save, orbax's worker threads wait forever for each other and the process hangs.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received = []
  previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if received:
    raise KeyboardInterrupt


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  with _ctrl_c_deferred():
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
              force=True)
    mngr.wait_until_finished()


def _reason(e: BaseException) -> str:
  """`Type: first line` of the root cause: orbax wraps TensorStore's clear error in a 60-line one."""
  while e.__cause__ is not None:
    e = e.__cause__
  lines = str(e).strip().splitlines()
  first = lines[0] if lines else ''
  return f'{type(e).__name__}: {first[:300]}' if first else type(e).__name__


def _is_abandoned_read(report) -> bool:
  """Orbax 0.12's report for a read coroutine closed after a sibling read failed."""
  return (isinstance(getattr(report.exc_value, '__cause__', None), GeneratorExit)
          and 'reading array index' in str(report.exc_value))


def _drop_abandoned_read_reports() -> None:
  """From now on, drops orbax's 60-line 'Exception ignored in: <coroutine ...>' reports of abandoned reads.

  Orbax 0.12 (serialization._read_array_index_and_device_put) turns the GeneratorExit that closes its other,
  abandoned read coroutines into an Exception; Python can only print those. The real error is raised anyway.
  The filter stays installed (it drops nothing else): orbax's threads may free those coroutines at any later
  time, so a filter removed after the failed read would miss some of them.
  """
  hook = sys.unraisablehook
  if getattr(hook, 'drops_abandoned_reads', False):
    return

  def quiet(report):
    if not _is_abandoned_read(report):
      hook(report)

  quiet.drops_abandoned_reads = True
  sys.unraisablehook = quiet


@contextlib.contextmanager
def _quiet_abandoned_reads():
  """Installs the filter above around a read, and collects the coroutines a failed read abandoned."""
  _drop_abandoned_read_reports()
  try:
    yield
  finally:
    gc.collect()  # the abandoned coroutines are closed when collected: as soon as possible


def _move_aside(step_dir: Path) -> Path:
  """Moves a step out of the manager's folder, to `<dir>.damaged/<step>` (`<step>.1`, ... if taken)."""
  target = step_dir.parent.with_name(step_dir.parent.name + '.damaged') / step_dir.name
  if parallel.is_main_process():  # one process moves (the others wait at the barrier in restore_latest)
    n = 0
    while target.exists():
      n += 1
      target = target.with_name(f'{step_dir.name}.{n}')
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(step_dir, target)
  return target


def restore_latest(mngr: ocp.CheckpointManager, template):
  """(state, meta) of the newest readable checkpoint, arrays placed like `template`'s; None when there is none.

  Unreadable steps newer than it are moved aside (and logged), so the run resumes as if they had never been
  written. When no step is readable at all this raises a UserError and moves nothing: that is what a changed
  model or config (a template that fits no checkpoint) or an unreachable disk looks like, and starting afresh
  would silently discard the run.
  """
  failed = []
  for step in sorted(mngr.all_steps(), reverse=True):
    with _quiet_abandoned_reads(), _ctrl_c_deferred():  # around the except too: it keeps the coroutines alive
      try:
        restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template),
                                                              meta=ocp.args.JsonRestore()))
      except Exception as e:  # noqa: BLE001 - orbax, TensorStore and json all raise their own types
        failed.append((step, _reason(e)))
        continue
    if failed:
      directory = Path(os.fspath(mngr.directory))
      for bad, reason in failed:
        moved = _move_aside(directory / str(bad))
        log.info('checkpoint %s cannot be restored (%s); moved it to %s and resuming from step %d',
                 directory / str(bad), reason, moved, step)
      parallel.barrier('udl_jax.checkpoint.moved_aside')
      mngr.reload()  # orbax caches its step list
    return restored['state'], restored['meta']
  if failed:
    steps = ', '.join(str(s) for s, _ in failed)
    raise UserError(f'{mngr.directory}: no checkpoint can be restored (steps {steps}; step {failed[0][0]}: '
                    f'{failed[0][1]}). If the model or settings changed, use a new work folder; otherwise '
                    f'move {mngr.directory} away (or delete it) to start this run afresh.')
  return None


def save_tree(path: str | Path, tree) -> None:
  """A finished model's parameters, for `experiments.assign` (written atomically by orbax)."""
  with _ctrl_c_deferred(), ocp.StandardCheckpointer() as ckptr:
    ckptr.save(Path(path).absolute(), tree, force=True)


def load_tree(path: str | Path, local: bool = False):
  """The pytree written by `save_tree`, as host arrays, no template needed.

  Every process of a multi-process job must call it (orbax waits for all of them), unless `local`: then this
  process reads it alone (the report's figures, drawn by process 0 after the others may have finished).
  Missing: FileNotFoundError with `.filename` set (callers name the missing file). Present but unreadable: a
  UserError, since the fix is to delete it and re-run the step that writes it.
  """
  path = Path(path).absolute()
  if not path.exists():
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
  me = jax.process_index()
  alone = {'multiprocessing_options': ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})} \
      if local else {}
  with _quiet_abandoned_reads(), _ctrl_c_deferred():
    try:
      with ocp.StandardCheckpointer(**alone) as ckptr:
        return ckptr.restore(path)
    except Exception as e:  # noqa: BLE001 - orbax, TensorStore and json all raise their own types
      reason = _reason(e)  # not chained: the exception would keep orbax's coroutines alive
  raise UserError(f'{path}: cannot be read ({reason}); it is damaged: delete it and re-run to have it recomputed')

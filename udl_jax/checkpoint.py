"""The one place that talks to orbax: save and restore a pytree plus JSON metadata, atomically.

Orbax writes each step into a temporary directory and renames it when complete, so a kill while saving leaves
the previous checkpoint as the latest loadable one.
"""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp


def manager(directory: str | Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True)
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, template):
  """(state, meta) of the newest checkpoint, arrays placed like `template`'s; None when there is none."""
  step = mngr.latest_step()
  if step is None:
    return None
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template),
                                                        meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


def save_tree(path: str | Path, tree) -> None:
  """A finished model's parameters, for `experiments.assign` (written atomically by orbax)."""
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(Path(path).absolute(), tree, force=True)


def load_tree(path: str | Path):
  """The pytree written by `save_tree`, as host arrays, no template needed."""
  path = Path(path).absolute()
  if not path.exists():
    raise FileNotFoundError(path)
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path)

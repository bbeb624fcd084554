"""Seed batching: the state of S seeds stacked on a leading axis, one program training them all.

A batch-256 step through the d-500-500-2000-10 autoencoder is a handful of small matmuls: on an accelerator
the run is bound by kernel latency, and S seeds trained as one `jax.vmap`-ed program cost little more than one.
Each seed keeps its own parameters, optimiser state, permutations and keys, so its numbers are those of a run
alone; a seed that is finished (early stop, DEC's `tol`) or not yet due (resumed ahead of the others) keeps its
state unchanged (`keep_inactive`) while the others go on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def stack(trees: Sequence):
  """One pytree whose arrays have a leading seed axis, from S pytrees of one structure."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def take(tree, i: int):
  """Seed i's pytree out of a stacked one."""
  return jax.tree.map(lambda a: a[i], tree)


def over_seeds(fn: Callable, num_seeds: int, in_axes: tuple) -> Callable:
  """fn vmapped over the leading seed axis of the arguments whose `in_axes` entry is 0 (None: shared).

  With one seed it is fn itself on that seed's arrays (the program of an unbatched run, so that the numbers of
  a run without seed batching do not move), with the seed axis put back on the outputs.
  """
  if num_seeds > 1:
    return jax.vmap(fn, in_axes=in_axes)

  def one(*args):
    args = [take(a, 0) if axis == 0 else a for a, axis in zip(args, in_axes)]
    return jax.tree.map(lambda out: out[None], fn(*args))
  return one


def keep_inactive(active: jax.Array, new, old):
  """`new` for the seeds where `active` (S,) is True, `old` elsewhere: finished seeds do not move."""
  def pick(n, o):
    return jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(pick, new, old)

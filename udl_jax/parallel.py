"""Data parallelism the current JAX way: a 1-D `data` mesh over all devices, batches sharded, params replicated.

`jax.jit` on arrays with these shardings inserts the gradient all-reduce that `pmap` + `lax.pmean` used to;
the same code runs on one CPU, on every GPU of a host, and (after `jax.distributed.initialize()`) on many hosts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from udl_jax.errors import UserError

_distributed_started = False


def initialize_distributed() -> None:
  """Joins a multi-host job (coordinator from the environment, as `jax.distributed.initialize` reads it)."""
  global _distributed_started
  if not _distributed_started:
    jax.distributed.initialize()
    _distributed_started = True


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicate(tree, mesh: Mesh):
  """Puts every array of a pytree on all devices of the mesh (parameters, optimiser state, the dataset)."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: jax.Array, mesh: Mesh) -> jax.Array:
  """Inside jit: splits the leading (batch) axis across the mesh's `data` axis."""
  return jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise UserError(f'batch_size {batch_size} must be a multiple of the {n} devices it is split across; '
                    f'use {batch_size - batch_size % n or n}')

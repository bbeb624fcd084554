"""Data parallelism the current JAX way: a 1-D `data` mesh over all devices, batches sharded, params replicated.

`jax.jit` on arrays with these shardings inserts the gradient all-reduce that `pmap` + `lax.pmean` used to;
the same code runs on one CPU, on every GPU of a host, and (after `initialize_distributed()`) on many hosts.

Several processes (hosts) run the same program in lockstep. Three rules keep them agreeing:
  - process 0 alone writes files and logs progress (`is_main_process`);
  - what the host computes and the devices then use (k-means centres, which trials to run) is decided once, on
    process 0, and broadcast (`broadcast_from_main`);
  - full-data passes are sharded over `data` (`sharded_map`) and read back with `to_host`, which gathers from
    every process.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from udl_jax import log
from udl_jax.errors import UserError

# Where a scheduler tells each process who it is; JAX itself reads only the first (the rest it detects on
# Slurm, Open MPI, Kubernetes and Cloud TPU, where these need not be set).
COORDINATOR_ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')

_distributed_started = False


def initialize_distributed() -> None:
  """Joins a multi-process job: `jax.distributed.initialize` with the coordinator settings of the environment.

  Must run before anything touches a JAX device. On CPUs the cross-process collectives go through gloo.
  Processes other than 0 then log warnings only.
  """
  global _distributed_started
  if _distributed_started:
    return
  address, num, pid = (os.environ.get(k) for k in COORDINATOR_ENV)
  if (num is None) != (pid is None):
    raise UserError('--config.distributed: set both JAX_NUM_PROCESSES and JAX_PROCESS_ID (or neither, on a '
                    'scheduler JAX detects)')
  try:
    kwargs = {} if num is None else {'num_processes': int(num), 'process_id': int(pid)}
  except ValueError as e:
    raise UserError(f'--config.distributed: JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers ({e})') from e
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(coordinator_address=address, **kwargs)
  except (ValueError, RuntimeError) as e:
    raise UserError(f'--config.distributed: cannot join the job ({str(e).splitlines()[0]}); set '
                    f'{", ".join(COORDINATOR_ENV)} (README, "Several hosts")') from e
  _distributed_started = True
  if not is_main_process():
    log.logger.setLevel('WARNING')


def is_main_process() -> bool:
  """Process 0: the one that writes files and logs progress."""
  return jax.process_index() == 0


def make_mesh() -> Mesh:
  """A 1-D mesh named `data` over every device of every process (sharding in `Auto` mode: jit places it)."""
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def single_device_mesh() -> Mesh:
  """A `data` mesh of this process's first device alone, for small work one process does by itself while the
  other processes of a multi-process job may have finished (the report's embedding map of a few thousand rows):
  no other process, and no collective between devices, takes part."""
  return jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.local_devices()[:1])


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


def check_batch_size(batch_size: int, mesh: Mesh, label: str = 'batch_size') -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise UserError(f'{label} {batch_size} must be a multiple of the {n} devices it is split across; '
                    f'use {batch_size - batch_size % n or n}')


def sharded_map(fn: Callable, mesh: Mesh, chunk: int = 4096) -> Callable:
  """jit((params, x) -> fn(params, rows) for all rows of x), each device computing its share of the rows.

  x (N, ...) is padded to a multiple of the device count times a chunk; each device runs `fn` over its
  rows in chunks of at most `chunk` (bounded memory) and the outputs, sharded over `data`, are cropped back
  to N rows. `fn(params, rows)` returns an array or a tuple of arrays with the rows as leading axis.
  """
  devices = mesh.devices.size

  def local(params, rows):
    size = min(chunk, rows.shape[0])
    out = jax.lax.map(lambda b: fn(params, b), rows.reshape(-1, size, *rows.shape[1:]))
    return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:]), out)

  def apply(params, x):
    n = x.shape[0]
    size = min(chunk, -(-n // devices))
    padded = jnp.pad(x, [(0, -n % (devices * size))] + [(0, 0)] * (x.ndim - 1))
    out = jax.shard_map(local, mesh=mesh, in_specs=(P(), P('data')), out_specs=P('data'))(params, padded)
    return jax.tree.map(lambda o: o[:n], out)

  return jax.jit(apply)


def to_host(x: jax.Array) -> np.ndarray:
  """A global array as one numpy array on every process (gathered when other processes hold parts of it)."""
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def broadcast_from_main(tree):
  """Process 0's values of a pytree of numpy arrays, on every process (other processes pass placeholders of
  the same shapes). With one process, the tree itself."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def computed_on_main(fn: Callable, like):
  """fn() on process 0, broadcast to all: host work (k-means) done once, identical everywhere.

  `like` is a pytree of arrays with the result's shapes and dtypes (the placeholders other processes send).
  """
  if jax.process_count() == 1:
    return fn()
  value = fn() if is_main_process() else jax.tree.map(np.zeros_like, like)
  return broadcast_from_main(value)


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (a no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)

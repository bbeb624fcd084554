"""DCN (Yang et al. 2017, "Towards K-means-friendly Spaces"): reconstruction + lambda/2 ||z - M s||^2.

s is each sample's hard assignment, kept per sample and refreshed after every step from the sample's new
embedding; the centres M are not trained by gradients but by the paper's per-cluster running average (its
eq. 8): every sample assigned to cluster k moves it by (z - M_k) / c_k, c_k counting every sample ever assigned
to k. Counts start at 100, as in the authors' code (not in the paper; ClustPy does the same).
"""

import jax
import jax.numpy as jnp
import numpy as np

from udl_jax import losses
from udl_jax.methods import base, register

INITIAL_COUNT = 100


def nearest(z: jax.Array, centres: jax.Array) -> jax.Array:
  return jnp.argmin(jnp.sum((z[:, None, :] - centres[None]) ** 2, axis=-1), axis=1).astype(jnp.int32)


def running_average(centres: jax.Array, counts: jax.Array, z: jax.Array, labels: jax.Array):
  """The sequential update M_k <- M_k - (M_k - z_i) / c_k (c_k += 1 first) over a batch, in closed form.

  Applied sample by sample it keeps M_k the mean of everything counted in it, so a batch of n_k samples of k
  gives (c_k M_k + sum z_i) / (c_k + n_k): the same numbers, without a loop over samples.
  """
  one_hot = jax.nn.one_hot(labels, centres.shape[0], dtype=z.dtype)
  added = one_hot.sum(0)
  new_counts = counts + added
  moved = (counts[:, None] * centres + one_hot.T @ z) / new_counts[:, None]
  return jnp.where(added[:, None] > 0, moved, centres), new_counts


def dcn_loss(x, recon, z, assigned_centres, weight: float) -> jax.Array:
  """MSE reconstruction + weight/2 * mean squared distance to the assigned (fixed) centres."""
  distortion = jnp.mean(jnp.sum((z - jax.lax.stop_gradient(assigned_centres)) ** 2, axis=-1))
  return losses.mse(recon, x) + 0.5 * weight * distortion


@register('dcn')
def dcn(weight: float = 0.05) -> base.FineTuner:
  """`weight` is the paper's lambda (0.05: ClustPy's default for its DCN)."""
  def init_state(labels, centres):
    return {'labels': jnp.asarray(labels, jnp.int32),
            'counts': jnp.full(np.shape(centres)[0], INITIAL_COUNT, jnp.float32)}

  def loss(b: base.Batch):
    return dcn_loss(b.x, b.recon, b.z, b.centres[b.state['labels'][b.idx]], weight)

  def update(state, centres, z, idx):
    labels = nearest(z, centres)
    centres, counts = running_average(centres, state['counts'], z, labels)
    return {'labels': state['labels'].at[idx].set(labels), 'counts': counts}, centres

  return base.FineTuner('dcn', loss=loss, target=None, needs_decoder=True, init_state=init_state, update=update)

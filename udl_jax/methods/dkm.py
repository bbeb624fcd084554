"""DKM (Fard et al. 2020, "Deep k-Means"): reconstruction + lambda * sum_k G_k(z) ||z - r_k||^2.

G is a softmax of -alpha times the squared distances to the centres (a differentiable k-means assignment);
encoder, decoder and centres are trained. As in the authors' code (MaziarMF/deep-k-means), the reconstruction
error is the squared error summed over pixels (mean over the batch), and alpha depends on the start: from a
pretrained autoencoder and its k-means (how every method here starts, the paper's DKMp) alpha is constant,
1000; the annealing schedule alpha_1 = 0.1, alpha_{i+1} = 2^(1 / ln(i)^2) alpha_i over 40 values (one per
update interval here) is the paper's DKMa, for a network trained from scratch: `annealing=True`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from udl_jax.methods import base, register

PRETRAINED_ALPHA = 1000.0


def alpha_schedule(first: float = 0.1, count: int = 40) -> np.ndarray:
  alphas = [first]
  for i in range(2, count + 1):  # the paper's rule, with i the index of the value being made
    alphas.append(alphas[-1] * 2 ** (1 / np.log(i) ** 2))
  return np.asarray(alphas, np.float32)


def squared_distances(z: jax.Array, centres: jax.Array) -> jax.Array:
  return jnp.sum((z[:, None, :] - centres[None]) ** 2, axis=-1)


def soft_kmeans(z: jax.Array, centres: jax.Array, alpha) -> jax.Array:
  """G: softmax over clusters of -alpha * squared distance (shifted by the row minimum: no underflow)."""
  d = squared_distances(z, centres)
  return jax.nn.softmax(-alpha * (d - d.min(axis=1, keepdims=True)), axis=1)


def dkm_loss(x, recon, z, centres, g, weight: float) -> jax.Array:
  reconstruction = jnp.mean(jnp.sum((recon - x).reshape(len(x), -1) ** 2, axis=1))
  return reconstruction + weight * jnp.mean(jnp.sum(g * squared_distances(z, centres), axis=1))


@register('dkm')
def dkm(weight: float = 1.0, annealing: bool = False) -> base.FineTuner:
  """`weight` is the paper's lambda (1.0, the authors' default)."""
  alphas = jnp.asarray(alpha_schedule() if annealing else np.float32([PRETRAINED_ALPHA]))

  def assign(z, centres, interval):
    return soft_kmeans(z, centres, alphas[jnp.minimum(interval, len(alphas) - 1)])

  return base.FineTuner('dkm', loss=lambda b: dkm_loss(b.x, b.recon, b.z, b.centres, b.q, weight), assign=assign,
                        target=None, needs_decoder=True)

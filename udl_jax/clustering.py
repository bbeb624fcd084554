"""DEC's clustering math as pure jnp functions, and the k-means that starts it (Xie et al. 2016).

  q_ij = (1 + |z_i - mu_j|^2 / alpha)^(-(alpha+1)/2) / sum_j' (...)          soft assignment (Student's t)
  p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j'),   f_j = sum_i q_ij          target distribution
  L    = KL(P || Q) = sum_i sum_j p_ij log(p_ij / q_ij)                        clustering loss
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans

from udl_jax import metrics


def soft_assignment(z: jax.Array, centres: jax.Array, alpha: float = 1.0) -> jax.Array:
  """Student's t kernel between embeddings (N, D) and centres (K, D); rows sum to 1.

  Computed in log space and normalised with a softmax, so rows stay finite and sum to 1 even when every
  kernel value underflows (points far from all centres).
  """
  sq_dist = jnp.sum((z[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
  log_kernel = -(alpha + 1.0) / 2.0 * jnp.log1p(sq_dist / alpha)
  return jax.nn.softmax(log_kernel, axis=-1)


def target_distribution(q: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Sharpened targets: square q, divide by cluster frequency, renormalise rows; an empty cluster is safe."""
  weight = q ** 2 / (jnp.sum(q, axis=0) + eps)
  return weight / jnp.sum(weight, axis=1, keepdims=True)


def kl_divergence(p: jax.Array, q: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Mean over samples of KL(p_i || q_i); zero where p_ij = 0 (0 log 0 = 0)."""
  return jnp.mean(jnp.sum(jax.scipy.special.xlogy(p, p) - p * jnp.log(q + eps), axis=-1))


def kmeans(x: np.ndarray, n_clusters: int, seed: int, n_init: int = 20) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn KMeans with DEC's n_init=20; returns (labels, centres)."""
  km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
  labels = km.fit_predict(np.asarray(x, np.float32))
  return labels.astype(np.int32), km.cluster_centers_.astype(np.float32)


def raw_kmeans(x_flat: np.ndarray, y: np.ndarray | None, n_clusters: int, seed: int,
               n_init: int = 20) -> tuple[np.ndarray, dict[str, float]]:
  """The raw-pixel baseline of the DEC tables: k-means on flattened images, with ACC/NMI/ARI."""
  labels, _ = kmeans(x_flat, n_clusters, seed, n_init)
  return labels, metrics.evaluate(y, labels)

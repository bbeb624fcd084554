"""AE + GMM: a Gaussian mixture (full covariances) on the pretrained embedding, the soft sibling of AE + KMeans."""

import numpy as np
from sklearn.mixture import GaussianMixture

from udl_jax.methods import base, register


def fit_gmm(z: np.ndarray, n_clusters: int, seed: int, n_init: int):
  """A fitted GaussianMixture's predict: rows -> (labels, posterior responsibilities)."""
  gmm = GaussianMixture(n_clusters, covariance_type='full', n_init=n_init, random_state=seed).fit(z)
  return lambda rows: (gmm.predict(rows).astype(np.int32), gmm.predict_proba(rows).astype(np.float32))


@register('ae_gmm')
def ae_gmm() -> base.EmbeddingClusterer:
  return base.EmbeddingClusterer('ae_gmm', fit=lambda z, k, seed, n_init: fit_gmm(np.asarray(z, np.float64), k,
                                                                                  seed, n_init))

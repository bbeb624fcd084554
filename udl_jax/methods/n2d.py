"""N2D (McConville et al. 2019): UMAP of the autoencoder's embedding to n_clusters dimensions, then a GMM.

The paper's settings: n_neighbors 20 (MNIST-size sets), min_dist 0, euclidean metric, full-covariance GMM.
UMAP is umap-learn's; its first call in a process compiles numba code (seconds), and it is single-seeded
(`random_state`) so that a seed gives the same labels every time, at the cost of UMAP's parallelism.
"""

import numpy as np

from udl_jax.methods import base, gmm, register


def fit_n2d(z: np.ndarray, n_clusters: int, seed: int, n_init: int, n_neighbors: int, min_dist: float):
  import umap  # heavy (numba): only when N2D runs
  reducer = umap.UMAP(n_components=n_clusters, n_neighbors=n_neighbors, min_dist=min_dist, metric='euclidean',
                      random_state=seed)
  manifold = reducer.fit_transform(np.asarray(z, np.float32))
  predict = gmm.fit_gmm(np.asarray(manifold, np.float64), n_clusters, seed, n_init)
  fitted = np.asarray(manifold)

  def predict_rows(rows):
    same = rows.shape == z.shape and np.array_equal(rows, z)  # the fit set: its own embedding, not re-projected
    return predict(np.asarray(fitted if same else reducer.transform(np.asarray(rows, np.float32)), np.float64))
  return predict_rows


@register('n2d')
def n2d(n_neighbors: int = 20, min_dist: float = 0.0, gmm_n_init: int = 0) -> base.EmbeddingClusterer:
  """`gmm_n_init`: the GMM's initialisations, the likeliest kept; 0 takes k-means' n_init (this harness's default
  and its tables'). N2D's own code (rymc/n2d) fits its GMM once: 1, which reference=n2d sets."""
  return base.EmbeddingClusterer('n2d', fit=lambda z, k, seed, n_init: fit_n2d(z, k, seed, gmm_n_init or n_init,
                                                                               n_neighbors, min_dist))

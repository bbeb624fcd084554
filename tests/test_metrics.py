"""Clustering metrics against hand-computed values, and the raw-pixel k-means baseline on digits."""

from __future__ import annotations

import numpy as np
import pytest

from udl_jax import clustering, data
from udl_jax.metrics import cluster_acc, contingency, evaluate, matched_cluster_order


def test_acc_permutation_is_one():
  y_true = np.array([0, 0, 1, 1, 2, 2, 2, 3])
  y_pred = np.array([2, 2, 3, 3, 0, 0, 0, 1])
  assert cluster_acc(y_true, y_pred) == 1.0


def test_acc_arbitrary_label_values():
  y_true = np.array([3, 3, 7, 7, 100])
  y_pred = np.array([-1, -1, 5, 5, 42])
  assert cluster_acc(y_true, y_pred) == 1.0


def test_matched_cluster_order_puts_the_matching_on_the_diagonal():
  # 3 classes, 4 clusters: cluster 7 is class 0, cluster 5 class 1, cluster 2 class 2; cluster 9 is left over
  y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
  y_pred = np.array([7, 7, 9, 5, 5, 2, 2, 2, 9, 9])
  counts, clusters, classes = contingency(y_true, y_pred)
  assert clusters.tolist() == [2, 5, 7, 9] and classes.tolist() == [0, 1, 2]
  assert counts.sum() == 10 and counts[clusters.tolist().index(9)].tolist() == [1, 1, 1]
  order = matched_cluster_order(counts)
  assert clusters[order].tolist() == [7, 5, 2, 9]
  assert np.trace(counts[order].T[:, :3]) == round(cluster_acc(y_true, y_pred) * 10) == 7


def test_acc_partial_match():
  # contingency (pred x true): pred0 = {true0: 1, true1: 3}, pred1 = {true0: 2, true1: 0}
  # best mapping pred0->1, pred1->0 gives 3 + 2 = 5 of 6 (identity mapping would give only 1)
  y_true = np.array([0, 0, 0, 1, 1, 1])
  y_pred = np.array([1, 1, 0, 0, 0, 0])
  assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 6)


def test_acc_best_mapping_not_greedy():
  # pred0 = {t0: 3, t1: 2}, pred1 = {t0: 3, t1: 0}: greedy (pred0->t0) gives 3 + 0,
  # the optimal one-to-one mapping pred0->t1, pred1->t0 gives 2 + 3 = 5 of 8.
  y_true = np.array([0, 0, 0, 1, 1, 0, 0, 0])
  y_pred = np.array([0, 0, 0, 0, 0, 1, 1, 1])
  assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 8)


def test_acc_more_clusters_than_classes():
  # 3 clusters, 2 classes: cluster 0 -> class 0 (2), one of clusters 1/2 -> class 1 (2); the other cluster's
  # 2 points have no class left and count as errors: 4 of 6.
  y_true = np.array([0, 0, 1, 1, 1, 1])
  y_pred = np.array([0, 0, 1, 1, 2, 2])
  assert cluster_acc(y_true, y_pred) == pytest.approx(4 / 6)


def test_acc_fewer_clusters_than_classes():
  # one cluster for everything: it maps to the largest class (3 of 6)
  assert cluster_acc(np.array([0, 0, 0, 1, 1, 2]), np.zeros(6, int)) == pytest.approx(0.5)
  # 2 clusters, 3 classes: c0 = {t0: 2, t1: 2}, c1 = {t2: 2}: 2 + 2 = 4 of 6
  y_true = np.array([0, 0, 1, 1, 2, 2])
  y_pred = np.array([0, 0, 0, 0, 1, 1])
  assert cluster_acc(y_true, y_pred) == pytest.approx(4 / 6)


def test_acc_shape_mismatch():
  with pytest.raises(ValueError, match='shape'):
    cluster_acc(np.zeros(5, int), np.zeros(4, int))


def test_evaluate_without_labels():
  assert evaluate(None, np.array([0, 1, 1])) == {}


def test_evaluate_permutation():
  y_true = np.array([0, 0, 1, 1, 2, 2, 2])
  y_pred = np.array([1, 1, 2, 2, 0, 0, 0])
  scores = evaluate(y_true, y_pred)
  assert set(scores) == {'acc', 'nmi', 'ari'}
  assert all(isinstance(v, float) for v in scores.values())
  assert scores['acc'] == pytest.approx(1.0)
  assert scores['nmi'] == pytest.approx(1.0)
  assert scores['ari'] == pytest.approx(1.0)


def test_evaluate_random_labels():
  rng = np.random.default_rng(0)
  y_true = rng.integers(0, 10, 50_000)
  y_pred = rng.integers(0, 10, 50_000)
  scores = evaluate(y_true, y_pred)
  assert scores['nmi'] < 0.01
  assert abs(scores['ari']) < 0.01
  assert scores['acc'] < 0.15  # chance is ~0.1; the best mapping buys a little


def test_raw_kmeans_digits():
  """The raw-pixel baseline on sklearn digits: NMI ~0.74 as published; same seed, same labels."""
  ds = data.load('digits')
  labels, scores = clustering.raw_kmeans(ds.flat, ds.y, 10, seed=0)
  assert labels.shape == (1797,)
  assert len(np.unique(labels)) == 10
  assert 0.70 <= scores['nmi'] <= 0.78
  assert scores == evaluate(ds.y, labels)
  labels_again, scores_again = clustering.raw_kmeans(ds.flat, ds.y, 10, seed=0)
  np.testing.assert_array_equal(labels, labels_again)
  assert scores_again == scores


def test_raw_kmeans_mnist(data_root):
  """The published raw-pixel baseline on MNIST-70k (skipped without the data). 2 inits instead of DEC's 20: the
  runs of raw-pixel k-means on MNIST all land near 0.50 NMI, and 20 cost 80 s of the suite."""
  ds = data.load('mnist', data_dir=str(data_root))
  _, scores = clustering.raw_kmeans(ds.flat, ds.y, 10, seed=0, n_init=2)
  assert 0.45 <= scores['nmi'] <= 0.55  # published ~0.50
  assert 0.48 <= scores['acc'] <= 0.58  # published ~0.53

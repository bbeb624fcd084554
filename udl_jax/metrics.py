"""Clustering quality against ground truth: ACC (best one-to-one mapping), NMI and ARI."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as sk_metrics


def cluster_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  """Accuracy under the best one-to-one cluster->class mapping (Hungarian algorithm).

  Works when the number of clusters differs from the number of classes: the contingency matrix is
  rectangular, and points in clusters left without a class count as errors.
  """
  counts, _, _ = contingency(y_true, y_pred)
  rows, cols = linear_sum_assignment(counts, maximize=True)
  return float(counts[rows, cols].sum() / counts.sum())


def contingency(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(counts, cluster ids, class ids): counts[i, j] is how many points of cluster ids[i] have class ids[j]."""
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  if y_true.shape != y_pred.shape:
    raise ValueError(f'y_true has shape {y_true.shape} but y_pred has {y_pred.shape}')
  classes, true_idx = np.unique(y_true, return_inverse=True)
  clusters, pred_idx = np.unique(y_pred, return_inverse=True)
  counts = np.zeros((len(clusters), len(classes)), np.int64)
  np.add.at(counts, (pred_idx, true_idx), 1)
  return counts, clusters, classes


def matched_cluster_order(counts: np.ndarray) -> np.ndarray:
  """Row indices of `counts` (clusters x classes) in the order of the classes they are matched to by ACC's
  Hungarian mapping, then the clusters left without a class: a confusion matrix in this column order has the
  matched pairs on its diagonal."""
  rows, cols = linear_sum_assignment(counts, maximize=True)
  matched = rows[np.argsort(cols)]
  return np.concatenate([matched, np.setdiff1d(np.arange(counts.shape[0]), matched)]).astype(np.int64)


def evaluate(y_true: np.ndarray | None, y_pred: np.ndarray) -> dict[str, float]:
  """ACC, NMI and ARI; an empty dict when there are no labels (unlabelled data is valid)."""
  if y_true is None:
    return {}
  return {
      'acc': cluster_acc(y_true, y_pred),
      'nmi': float(sk_metrics.normalized_mutual_info_score(y_true, y_pred)),
      'ari': float(sk_metrics.adjusted_rand_score(y_true, y_pred)),
  }

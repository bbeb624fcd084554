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
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  if y_true.shape != y_pred.shape:
    raise ValueError(f'y_true has shape {y_true.shape} but y_pred has {y_pred.shape}')
  _, true_idx = np.unique(y_true, return_inverse=True)
  _, pred_idx = np.unique(y_pred, return_inverse=True)
  counts = np.zeros((pred_idx.max() + 1, true_idx.max() + 1), np.int64)
  np.add.at(counts, (pred_idx, true_idx), 1)
  rows, cols = linear_sum_assignment(counts, maximize=True)
  return float(counts[rows, cols].sum() / y_true.size)


def evaluate(y_true: np.ndarray | None, y_pred: np.ndarray) -> dict[str, float]:
  """ACC, NMI and ARI; an empty dict when there are no labels (unlabelled data is valid)."""
  if y_true is None:
    return {}
  return {
      'acc': cluster_acc(y_true, y_pred),
      'nmi': float(sk_metrics.normalized_mutual_info_score(y_true, y_pred)),
      'ari': float(sk_metrics.adjusted_rand_score(y_true, y_pred)),
  }

"""PNG figures a researcher opens first: reconstructions, samples, loss curves, clusters by eye.

Numbers (ACC, MSE, PSNR) say how well a run went; these figures say what went wrong. Images are
float arrays NHWC (or NHW) in [0, 1]. Every function writes its PNG atomically (temp file in the
same directory, then renamed: `results.write_atomic`), so a crashed or concurrent run never leaves a half-written file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from udl_jax import metrics, results  # noqa: E402

DPI = 120
_SKIP_KEYS = ('epoch', 'seconds', 'samples_per_s')
_MAX_GRID_INCHES = 40.0  # keeps a grid of many clusters from becoming an unopenable image


def _as_nhwc(images) -> np.ndarray:
  """(N, H, W) or (N, H, W, C) -> float32 (N, H, W, C), clipped to [0, 1]."""
  x = np.asarray(images, np.float32)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f'expected images (N, H, W) or (N, H, W, C), got shape {x.shape}')
  return np.clip(x, 0.0, 1.0)


def _save(fig, path) -> Path:
  """Writes the figure to path atomically (as every result file: only process 0 writes) and closes it."""
  path = Path(path)
  buf = io.BytesIO()
  try:
    fig.savefig(buf, dpi=DPI, format='png')
  finally:
    plt.close(fig)
  results.write_atomic(path, buf.getvalue())
  return path


def _grid(rows: Sequence[np.ndarray], path, title: str = '',
          labels: Sequence[str] | None = None, empty_text: str = '(empty)') -> Path:
  """Draw rows of NHWC images (a row may hold 0 images) as one figure, each row labelled on the left."""
  nrows = max(1, len(rows))
  ncols = max([1] + [len(r) for r in rows])
  cell = min(1.0, _MAX_GRID_INCHES / nrows, _MAX_GRID_INCHES / ncols)
  label_w = 1.6 if labels else 0.0
  fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout='constrained',
                           figsize=(ncols * cell + label_w, nrows * cell + (0.5 if title else 0.1)))
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
      spine.set_visible(False)
  for i, row in enumerate(rows):
    for j, img in enumerate(row):
      if img.shape[-1] == 1:
        axes[i, j].imshow(img[..., 0], cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest')
      else:
        axes[i, j].imshow(img, vmin=0.0, vmax=1.0, interpolation='nearest')
    if len(row) == 0:
      axes[i, 0].text(0.5, 0.5, empty_text, ha='center', va='center', fontsize=8,
                      transform=axes[i, 0].transAxes, color='0.4')
    if labels:
      axes[i, 0].set_ylabel(labels[i], rotation=0, ha='right', va='center', fontsize=9, labelpad=6)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
  return _save(fig, path)


def reconstructions(originals, recons, path, title: str = 'Reconstructions') -> Path:
  """Originals above their reconstructions, up to 10 columns."""
  originals, recons = _as_nhwc(originals), _as_nhwc(recons)
  n = min(10, len(originals), len(recons))
  return _grid([originals[:n], recons[:n]], path, title, labels=['original', 'reconstruction'])


def denoising(clean, noisy, denoised, path, psnr_noisy: float | None = None,
              psnr_denoised: float | None = None, title: str = 'Denoising') -> Path:
  """Clean / noisy / denoised rows, up to 10 columns; PSNR (dB) in the row labels when given."""
  clean, noisy, denoised = _as_nhwc(clean), _as_nhwc(noisy), _as_nhwc(denoised)
  n = min(10, len(clean), len(noisy), len(denoised))
  psnr = lambda v: '' if v is None else f'\nPSNR {float(v):.2f} dB'  # noqa: E731
  labels = ['clean', 'noisy' + psnr(psnr_noisy), 'denoised' + psnr(psnr_denoised)]
  return _grid([clean[:n], noisy[:n], denoised[:n]], path, title, labels=labels)


def image_grid(images, path, title: str, ncols: int = 10) -> Path:
  """All images, ncols to a row (e.g. VAE samples from the prior)."""
  images = _as_nhwc(images)
  ncols = max(1, int(ncols))
  return _grid([images[i:i + ncols] for i in range(0, len(images), ncols)] or [images], path, title,
               empty_text='(no images)')


def interpolation(rows, path, title: str) -> Path:
  """One interpolation per row: rows is (R, S, H, W[, C]), S steps from start to end."""
  rows = np.asarray(rows)
  if rows.ndim not in (4, 5):
    raise ValueError(f'expected rows (R, S, H, W[, C]), got shape {rows.shape}')
  return _grid([_as_nhwc(r) for r in rows], path, title)


def _numeric(v) -> float | None:
  try:
    v = float(v)
  except (TypeError, ValueError):
    return None
  return v if np.isfinite(v) else None


def _series(history: Sequence[Mapping], key: str, step_key: str = 'epoch') -> tuple[list[float], list[float]]:
  """(steps, values) of one key of a history, skipping rows where either is missing or not finite; a row
  without a step counts from 1."""
  points = [(_numeric(h.get(step_key, i + 1)), _numeric(h.get(key))) for i, h in enumerate(history)]
  points = [(x, y) for x, y in points if x is not None and y is not None]
  return tuple(map(list, zip(*points))) if points else ([], [])


# A log axis over less than a decade has no major tick and reads worse than a linear one.
_LOG_MIN_SPAN = 10.0


def _finish_axes(ax, values: Sequence[float], xlabel: str, ylabel: str, log_y: bool = True) -> None:
  """Labels, grid, legend and (when every value is positive and they span a decade) a log y-axis; 'no data'
  instead of an empty frame when nothing was drawn."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=6, integer=True))
  if not values:
    ax.text(0.5, 0.5, 'no data', ha='center', va='center', transform=ax.transAxes, color='0.4')
    return
  if log_y and min(values) > 0 and max(values) / min(values) >= _LOG_MIN_SPAN:
    ax.set_yscale('log')
  ax.grid(True, alpha=0.3, which='both')
  handles = ax.get_legend_handles_labels()[0]
  if handles:
    crowded = len(handles) > 6
    ax.legend(fontsize=7 if crowded else 8, ncol=2 if crowded else 1)


def _same_series(history: Sequence[Mapping], a: str, b: str) -> bool:
  xa, ya = _series(history, a)
  xb, yb = _series(history, b)
  return bool(ya) and xa == xb and np.allclose(ya, yb, rtol=1e-6, atol=0.0)


def loss_curves(history: Sequence[Mapping], path, keys: Sequence[str] | None = None,
                title: str = '', ylabel: str = 'loss') -> Path:
  """Each key of a per-epoch history against epoch; log y-axis when every value is positive over a decade.

  A key whose values repeat an earlier key's (`mse` is the loss itself when the model adds no penalty) is not
  drawn again on top of it: the earlier line's label names both.
  """
  if keys is None:
    keys = list(dict.fromkeys(k for h in history for k in h if k not in _SKIP_KEYS))
  labels: dict[str, str] = {}
  for key in keys:
    same = next((k for k in labels if _same_series(history, k, key)), None)
    if same is None:
      labels[key] = key
    else:
      labels[same] += f' = {key}'
  fig, ax = plt.subplots(figsize=(7, 4.5))
  all_values = []
  for key, label in labels.items():
    xs, ys = _series(history, key)
    if xs:
      all_values += ys
      ax.plot(xs, ys, marker='o' if len(xs) < 30 else None, markersize=3, label=label)
  _finish_axes(ax, all_values, 'epoch', ylabel)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return _save(fig, path)


def pretraining_curves(histories: Mapping[int, Sequence[Mapping]], path, title: str = '') -> Path:
  """The autoencoder's training loss of every seed in one figure (one colour per seed; the validation loss
  dashed in the same colour when there is one): a seed that trained worse than the others stands out."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  all_values = []
  colours = plt.get_cmap('tab10')
  for i, (seed, history) in enumerate(sorted(histories.items())):
    for key, style in (('loss', '-'), ('val_loss', '--')):
      xs, ys = _series(history, key)
      if xs:
        all_values += ys
        ax.plot(xs, ys, style, color=colours(i % 10), label=f'seed {seed}' + (' (validation)' if style == '--' else ''))
  _finish_axes(ax, all_values, 'epoch', 'loss')
  ax.set_title(title or 'Autoencoder pretraining')
  fig.tight_layout()
  return _save(fig, path)


_LINE_STYLES = ('-', '--')  # a panel's first and second key (ACC solid, NMI dashed)
_FINE_TUNING_PANELS = (('ACC / NMI', ('acc', 'nmi'), False), ('share of labels changed', ('delta_label',), False),
                       ('clustering loss', ('loss',), True))


def fine_tuning_curves(histories: Mapping[int, Sequence[Mapping]], path, title: str = '',
                       step: str = 'iteration') -> Path:
  """A clustering method's history per seed against its `step` (a fine-tuner's iteration, an own trainer's
  epoch): ACC and NMI (when the data has labels), the share of labels that changed since the previous target
  update (the stopping criterion) and the loss.

  Panels without data are left out, so an unlabelled run shows no empty ACC axes. One colour per seed; ACC
  solid, NMI dashed (the legend names each seed once, and the two styles).
  """
  panels = [(name, keys, log_y) for name, keys, log_y in _FINE_TUNING_PANELS
            if any(_series(h, k, step)[0] for h in histories.values() for k in keys)]
  fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.6), squeeze=False)
  colours = plt.get_cmap('tab10')
  for ax, (name, keys, log_y) in zip(axes[0], panels):
    values = []
    for i, (seed, history) in enumerate(sorted(histories.items())):
      for key, style in zip(keys, _LINE_STYLES):
        xs, ys = _series(history, key, step)
        if xs:
          values += ys
          ax.plot(xs, ys, style, color=colours(i % 10), label=f'seed {seed}' if key == keys[0] else None,
                  marker='o' if len(xs) < 30 else None, markersize=2)
    if len(keys) > 1 and values:
      for key, style in zip(keys, _LINE_STYLES):
        ax.plot([], [], style, color='0.3', label=key.upper())
    _finish_axes(ax, values, step, name, log_y=log_y)
  if not panels:
    _finish_axes(axes[0, 0], [], step, '')
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  return _save(fig, path)


def confusion_matrix(y_true, y_pred, path, title: str = '', max_annotated: int = 20) -> Path:
  """True classes (rows) against predicted clusters (columns), the columns in the order of the Hungarian
  matching that ACC scores (`metrics.matched_cluster_order`): a good clustering is a bright diagonal, and a
  class split over two clusters or two classes merged into one is visible at a glance.

  Colour is the share of the class's points (row-normalised, so small classes read as well as large ones);
  counts are written in the cells when neither side has more than `max_annotated` entries.
  """
  counts, clusters, classes = metrics.contingency(y_true, y_pred)
  order = metrics.matched_cluster_order(counts)
  matrix = counts[order].T  # classes x clusters
  share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
  size = min(_MAX_GRID_INCHES / 2, 2.0 + 0.45 * max(matrix.shape))
  fig, ax = plt.subplots(figsize=(size + 1.2, size))
  image = ax.imshow(share, cmap='Blues', vmin=0.0, vmax=1.0, aspect='auto', interpolation='nearest')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='share of the class')
  ax.set_xticks(range(len(order)), [str(c) for c in clusters[order]], fontsize=8)
  ax.set_yticks(range(len(classes)), [str(c) for c in classes], fontsize=8)
  ax.set_xlabel('predicted cluster (Hungarian-matched order)')
  ax.set_ylabel('true class')
  if max(matrix.shape) <= max_annotated:
    for (i, j), n in np.ndenumerate(matrix):
      if n:
        ax.text(j, i, str(n), ha='center', va='center', fontsize=7, color='white' if share[i, j] > 0.5 else 'black')
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return _save(fig, path)


_TSNE_MIN_POINTS = 50
_TSNE_ITERATIONS = 500  # half sklearn's default: a map of a few thousand points has settled by then


def _tsne_threads() -> int:
  """OpenMP threads for t-SNE: a quarter of the usable CPUs. Its Barnes-Hut gradient on a few thousand points is
  little work per iteration and its threads meet at a barrier every iteration, so on shared cores (XLA's pool,
  other jobs) all threads spin and wait: on a busy 2-core machine 2 threads took 52 s for 1,797 points, 1 thread 8 s."""
  usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
  return max(1, usable // 4)


def project_2d(z, seed: int = 0) -> tuple[np.ndarray, str]:
  """(N, 2) points and the method's name: t-SNE (PCA initialised, seeded, so the same input gives the same
  map), or PCA below `_TSNE_MIN_POINTS`, where t-SNE's perplexity has too few neighbours to mean anything."""
  from sklearn.decomposition import PCA  # noqa: PLC0415  (sklearn is slow to import; only maps need it)
  from sklearn.manifold import TSNE  # noqa: PLC0415
  from threadpoolctl import threadpool_limits  # noqa: PLC0415  (scikit-learn's own dependency)
  z = np.asarray(z, np.float32).reshape(len(z), -1)
  if z.shape[1] <= 2 or len(z) < 3:
    return np.pad(z[:, :2], ((0, 0), (0, 2 - min(2, z.shape[1])))), 'embedding'
  if len(z) < _TSNE_MIN_POINTS:
    return PCA(2, random_state=seed).fit_transform(z), 'PCA'
  tsne = TSNE(2, init='pca', random_state=seed, perplexity=min(30.0, (len(z) - 1) / 3), max_iter=_TSNE_ITERATIONS)
  with threadpool_limits(limits=_tsne_threads(), user_api='openmp'):
    return tsne.fit_transform(z), 't-SNE'


def _scatter_labels(ax, points: np.ndarray, labels: np.ndarray, title: str, ids: np.ndarray, n_colours: int) -> None:
  """Points coloured by label, the i-th of `ids` in the i-th of `n_colours` colours (the same palette in every
  panel of a figure)."""
  many = n_colours > 20
  colours = plt.get_cmap('hsv' if many else 'tab10' if n_colours <= 10 else 'tab20')
  for i, k in enumerate(ids):
    mine = labels == k
    ax.scatter(points[mine, 0], points[mine, 1], s=4, color=colours(i / n_colours if many else i), label=str(k),
               linewidths=0)
  if not many:
    ax.legend(fontsize=7, markerscale=3, loc='center left', bbox_to_anchor=(1.0, 0.5), frameon=False)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=10)


def embedding_map(points, clusters, path, true_labels=None, title: str = '', projection: str = 't-SNE') -> Path:
  """2-D points (`project_2d` of an embedding) coloured by cluster and, when labels exist, beside them the
  same points coloured by true class: whether clusters are separated in the embedding, and which classes the
  embedding itself mixes up. With labels, each cluster takes the colour of the class ACC's matching gives it
  (`metrics.matched_cluster_order`), so the two panels read as one."""
  points, clusters = np.asarray(points, np.float64), np.asarray(clusters).reshape(-1)
  if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(clusters):
    raise ValueError(f'expected (N, 2) points for {len(clusters)} labels, got shape {points.shape}')
  panels = [(clusters, 'coloured by cluster', np.unique(clusters))]
  if true_labels is not None:
    true_labels = np.asarray(true_labels).reshape(-1)
    counts, cluster_ids, classes = metrics.contingency(true_labels, clusters)
    panels = [(clusters, 'coloured by cluster (colour of its matched class)',
               cluster_ids[metrics.matched_cluster_order(counts)]), (true_labels, 'coloured by true class', classes)]
  fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.0), squeeze=False)
  n_colours = max(len(ids) for _, _, ids in panels)
  for ax, (labels, what, ids) in zip(axes[0], panels):
    _scatter_labels(ax, points, labels, f'{projection}, {what}', ids, n_colours)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  return _save(fig, path)


def cluster_grid(images, labels, path, per_cluster: int = 10, title: str = '', confidence=None,
                 n_clusters: int | None = None) -> Path:
  """One row per cluster (by id): up to per_cluster members, most confident first when given.

  Clusters are the ids in labels, plus 0..n_clusters-1 when n_clusters is given, so an empty
  cluster shows as a row marked empty instead of vanishing.
  """
  images, labels = _as_nhwc(images), np.asarray(labels).reshape(-1)
  if len(images) != len(labels):
    raise ValueError(f'{len(images)} images but {len(labels)} labels')
  order = np.arange(len(labels))
  if confidence is not None:
    confidence = np.asarray(confidence, np.float64).reshape(-1)
    if len(confidence) != len(labels):
      raise ValueError(f'{len(labels)} labels but {len(confidence)} confidences')
    order = np.argsort(-np.nan_to_num(confidence, nan=-np.inf), kind='stable')
  ids = set(np.unique(labels).tolist())
  if n_clusters is not None:
    ids |= set(range(int(n_clusters)))
  rows, row_labels = [], []
  for k in sorted(ids):
    members = order[labels[order] == k]
    rows.append(images[members[:per_cluster]])
    row_labels.append(f'cluster {k} (n={len(members)})')
  return _grid(rows, path, title, labels=row_labels)

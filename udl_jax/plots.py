"""PNG figures a researcher opens first: reconstructions, samples, loss curves, clusters by eye.

Numbers (ACC, MSE, PSNR) say how well a run went; these figures say what went wrong. Images are
float arrays NHWC (or NHW) in [0, 1]. Every function writes its PNG atomically (temp file in the
same directory, then renamed: `results.write_atomic`), so a crashed or concurrent run never leaves a half-written file.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from udl_jax import results  # noqa: E402

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


def loss_curves(history: Sequence[Mapping], path, keys: Sequence[str] | None = None,
                title: str = '') -> Path:
  """Each key of a per-epoch history against epoch; log y-axis when every value is positive."""
  if keys is None:
    keys = list(dict.fromkeys(k for h in history for k in h if k not in _SKIP_KEYS))
  fig, ax = plt.subplots(figsize=(7, 4.5))
  all_values = []
  for key in keys:
    points = [(_numeric(h.get('epoch', i + 1)), _numeric(h.get(key))) for i, h in enumerate(history)]
    points = [(x, y) for x, y in points if x is not None and y is not None]
    if not points:
      continue
    xs, ys = zip(*points)
    all_values += ys
    ax.plot(xs, ys, marker='o' if len(xs) < 30 else None, markersize=3, label=key)
  if all_values:
    if min(all_values) > 0:
      ax.set_yscale('log')
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.3, which='both')
  else:
    ax.text(0.5, 0.5, 'no data', ha='center', va='center', transform=ax.transAxes)
  ax.set_xlabel('epoch')
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  if title:
    ax.set_title(title)
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

"""Every figure writes a PNG that opens, of a plausible size, with no temp file left behind."""

import numpy as np
import pytest
from PIL import Image

from udl_jax import plots

RNG = np.random.default_rng(0)


def _images(n, c=1, h=8, w=8):
  return RNG.random((n, h, w, c), dtype=np.float32)


def _check_png(path, min_w=200, min_h=100):
  assert path.exists() and path.stat().st_size > 0
  with Image.open(path) as im:
    im.verify()
  with Image.open(path) as im:
    assert im.format == 'PNG'
    w, h = im.size
  assert min_w <= w <= 6000 and min_h <= h <= 6000, (w, h)
  leftovers = [p.name for p in path.parent.iterdir() if p.name != path.name]
  assert not leftovers, leftovers
  return w, h


def test_reconstructions(tmp_path):
  out = plots.reconstructions(_images(12), _images(12), tmp_path / 'sub' / 'recon.png')
  assert out == tmp_path / 'sub' / 'recon.png'
  _check_png(out)


def test_reconstructions_accepts_nhw(tmp_path):
  path = tmp_path / 'recon.png'
  plots.reconstructions(_images(3)[..., 0], _images(3)[..., 0], path, title='NHW input')
  _check_png(path, min_w=100)


@pytest.mark.parametrize('psnr', [(None, None), (14.2, 23.87)])
def test_denoising(tmp_path, psnr):
  path = tmp_path / 'denoise.png'
  plots.denoising(_images(6), _images(6), _images(6), path, *psnr)
  _check_png(path)


def test_image_grid_rgb(tmp_path):
  path = tmp_path / 'samples.png'
  plots.image_grid(_images(11, c=3), path, 'VAE samples', ncols=6)
  _check_png(path)


def test_interpolation(tmp_path):
  path = tmp_path / 'interp.png'
  plots.interpolation(RNG.random((3, 6, 8, 8, 1)), path, 'latent interpolation')
  _check_png(path)


def test_loss_curves(tmp_path):
  history = [{'epoch': e, 'loss': 1.0 / e, 'val_loss': 1.2 / e, 'mse': 0.5 / e, 'seconds': 3.0,
              'samples_per_s': 1e4} for e in range(1, 6)]
  path = tmp_path / 'loss.png'
  plots.loss_curves(history, path, title='AE')
  _check_png(path)


def test_loss_curves_without_val_loss_and_nonpositive(tmp_path):
  history = [{'epoch': e, 'loss': 1.0 - 0.3 * e, 'kl': 0.1 * e} for e in range(1, 5)]
  path = tmp_path / 'loss.png'
  plots.loss_curves(history, path)
  _check_png(path)
  plots.loss_curves(history, path, keys=['loss', 'val_loss'])  # overwrite; val_loss is missing
  _check_png(path)


def test_cluster_grid_with_empty_cluster(tmp_path):
  labels = np.array([0, 2, 0, 2, 3, 0, 3, 3, 0, 2] * 3)  # cluster 1 is empty
  images = _images(len(labels))
  path = tmp_path / 'clusters.png'
  plots.cluster_grid(images, labels, path, per_cluster=5, title='DEC', n_clusters=4,
                     confidence=RNG.random(len(labels)))
  w, h = _check_png(path)
  plots.cluster_grid(images, labels, path)  # without confidence or n_clusters
  w3, h3 = _check_png(path)
  assert h3 < h  # three rows instead of four


def test_cluster_grid_rejects_mismatched_lengths(tmp_path):
  with pytest.raises(ValueError):
    plots.cluster_grid(_images(4), np.zeros(5, int), tmp_path / 'x.png')

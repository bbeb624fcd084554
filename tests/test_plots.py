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


def _drawn(monkeypatch):
  """What each figure drew, per axes, recorded as it is saved: legend texts, y-label, y-scale."""
  seen, save = [], plots._save

  def record(fig, path):
    for ax in fig.axes:
      legend = ax.get_legend()
      seen.append({'legend': [t.get_text() for t in legend.get_texts()] if legend else [],
                   'ylabel': ax.get_ylabel(), 'xlabel': ax.get_xlabel(), 'yscale': ax.get_yscale()})
    return save(fig, path)
  monkeypatch.setattr(plots, '_save', record)
  return seen


def test_loss_curves_draw_mse_once_when_it_is_the_loss(tmp_path, monkeypatch):
  seen = _drawn(monkeypatch)
  same = [{'epoch': e, 'loss': 1.0 / e ** 2, 'mse': 1.0 / e ** 2} for e in range(1, 6)]
  penalised = [{'epoch': e, 'loss': 1.1 / e, 'mse': 1.0 / e} for e in range(1, 6)]
  flat = [{'epoch': e, 'loss': 0.5 - 0.01 * e} for e in range(1, 6)]
  for history in (same, penalised, flat):
    _check_png(plots.loss_curves(history, tmp_path / 'loss.png'))
  assert [s['legend'] for s in seen] == [['loss = mse'], ['loss', 'mse'], ['loss']]
  assert all(s['xlabel'] == 'epoch' and s['ylabel'] == 'loss' for s in seen)
  assert [s['yscale'] for s in seen] == ['log', 'linear', 'linear']  # log only over a decade


def test_pretraining_curves_one_line_per_seed(tmp_path, monkeypatch):
  seen = _drawn(monkeypatch)
  histories = {s: [{'epoch': e, 'loss': (1 + s) / e, **({'val_loss': 1.2 / e} if s == 2 else {})}
                   for e in range(1, 30)] for s in (0, 1, 2)}
  _check_png(plots.pretraining_curves(histories, tmp_path / 'pre.png'))
  assert seen[0]['legend'] == ['seed 0', 'seed 1', 'seed 2', 'seed 2 (validation)']
  assert seen[0]['yscale'] == 'log' and seen[0]['xlabel'] == 'epoch'


def test_fine_tuning_curves_leave_out_what_is_not_there(tmp_path, monkeypatch):
  seen = _drawn(monkeypatch)
  labelled = {s: [{'iteration': 30 * i, 'delta_label': 0.1 / (i + 1), 'acc': 0.7 + 0.01 * i, 'nmi': 0.6,
                   'loss': 0.1} for i in range(5)] for s in (0, 1)}
  _check_png(plots.fine_tuning_curves(labelled, tmp_path / 'dec.png', title='DEC'), min_w=600)
  assert [s['ylabel'] for s in seen] == ['ACC / NMI', 'share of labels changed', 'clustering loss']
  assert seen[0]['legend'] == ['seed 0', 'seed 1', 'ACC', 'NMI']  # each seed once (its colour), then the styles
  seen.clear()
  unlabelled = {0: [{k: v for k, v in row.items() if k not in ('acc', 'nmi')} for row in labelled[0]]}
  _check_png(plots.fine_tuning_curves(unlabelled, tmp_path / 'dec.png'))
  assert [s['ylabel'] for s in seen] == ['share of labels changed', 'clustering loss']
  assert all(s['xlabel'] == 'iteration' for s in seen)
  seen.clear()
  # VaDE's history: a loss per epoch, the scores at its start (epoch 0) and every 10th epoch.
  by_epoch = {0: [{'epoch': 0, 'acc': 0.8, 'nmi': 0.7}] + [{'epoch': e, 'loss': 100.0 - e,
                                                             **({'acc': 0.85, 'nmi': 0.8} if e % 10 == 0 else {})}
                                                            for e in range(1, 31)]}
  _check_png(plots.fine_tuning_curves(by_epoch, tmp_path / 'vade' / 'vade.png', step='epoch'))
  assert [s['ylabel'] for s in seen] == ['ACC / NMI', 'clustering loss']
  assert all(s['xlabel'] == 'epoch' for s in seen)


def test_confusion_matrix(tmp_path):
  y = np.repeat(np.arange(4), 25)
  pred = (y + 1) % 4  # a relabelling: every class is one cluster
  pred[:5] = 9  # and a fifth, small cluster
  w, h = _check_png(plots.confusion_matrix(y, pred, tmp_path / 'cm.png', title='DEC'))
  assert w > 300 and h > 300
  many = RNG.integers(0, 30, 600)  # too many cells to write the counts in
  _check_png(plots.confusion_matrix(many, (many + RNG.integers(0, 2, 600)) % 30, tmp_path / 'cm.png'))


def test_project_2d_is_deterministic_and_falls_back_to_pca():
  z = np.concatenate([RNG.normal(0, 1, (60, 5)), RNG.normal(8, 1, (60, 5))]).astype(np.float32)
  a, how = plots.project_2d(z, seed=3)
  b, _ = plots.project_2d(z, seed=3)
  assert how == 't-SNE' and a.shape == (120, 2)
  np.testing.assert_array_equal(a, b)
  # the two blobs stay apart: every point nearer its own blob's centre
  centres = np.stack([a[:60].mean(0), a[60:].mean(0)])
  nearest = np.argmin(((a[:, None] - centres[None]) ** 2).sum(-1), 1)
  assert (nearest == np.repeat([0, 1], 60)).all()
  few, how = plots.project_2d(z[:20])
  assert how == 'PCA' and few.shape == (20, 2)
  flat, how = plots.project_2d(z[:10, :1])
  assert how == 'embedding' and flat.shape == (10, 2) and (flat[:, 1] == 0).all()


@pytest.mark.parametrize('with_labels', [False, True])
def test_embedding_map(tmp_path, with_labels):
  points = RNG.normal(size=(200, 2))
  clusters = RNG.integers(0, 5, 200)
  path = tmp_path / 'map.png'
  w, _ = _check_png(plots.embedding_map(points, clusters, path, (clusters + 2) % 5 if with_labels else None,
                                        title='DEC, seed 0'))
  assert w > 1000 if with_labels else w < 1000  # a second panel beside the first
  with pytest.raises(ValueError):
    plots.embedding_map(points[:, :1], clusters, path)

"""On-device augmentation: shapes, identity at zero strength, a known shift moves the pixel mass, per-key
determinism, and pretraining with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from udl_jax import augment


def _blob(h=16, w=16, y=8, x=8):
  img = np.zeros((h, w, 1), np.float32)
  img[y - 2:y + 2, x - 2:x + 2] = 1.0
  return jnp.asarray(img)


def _centre_of_mass(img):
  img = np.asarray(img)[..., 0]
  ys, xs = np.indices(img.shape)
  return np.array([(ys * img).sum(), (xs * img).sum()]) / img.sum()


def test_zero_strength_is_the_identity_and_shapes_and_dtype_are_kept(digits):
  x = jnp.asarray(digits.x[:32])
  out = augment.random_affine(jax.random.key(0), x, max_shift=0.0, max_degrees=0.0)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_allclose(out, x, atol=1e-6)


def test_a_known_shift_moves_the_pixel_mass_by_that_shift():
  img = _blob()
  moved = augment.transform(img, jnp.array([3.0, -2.0]), jnp.array(0.0))
  np.testing.assert_allclose(_centre_of_mass(moved) - _centre_of_mass(img), [3.0, -2.0], atol=1e-4)
  assert float(moved.sum()) == float(img.sum())  # whole-pixel shift inside the frame: nothing lost


def test_a_rotation_about_the_centre_keeps_a_centred_blob_and_turns_an_off_centre_one():
  centred = augment.transform(_blob(), jnp.zeros(2), jnp.deg2rad(90.0))
  np.testing.assert_allclose(centred, _blob(), atol=1e-5)
  off = _blob(y=4, x=8)  # above the centre (7.5, 7.5)
  turned = augment.transform(off, jnp.zeros(2), jnp.deg2rad(90.0))
  com = _centre_of_mass(turned)
  # A quarter turn moves it from above the centre to one side of it, at the same distance.
  np.testing.assert_allclose(np.linalg.norm(com - 7.5), np.linalg.norm(_centre_of_mass(off) - 7.5), atol=1e-3)
  assert abs(com[0] - 7.5) < 1e-3


def test_the_same_key_gives_the_same_batch_and_another_key_another(digits):
  x = jnp.asarray(digits.x[:16])
  a = augment.random_affine(jax.random.key(1), x)
  np.testing.assert_array_equal(a, augment.random_affine(jax.random.key(1), x))
  assert not np.allclose(a, augment.random_affine(jax.random.key(2), x))
  assert not np.allclose(a, x)  # it does move the images
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0  # bilinear: stays in the pixel range


def test_augmented_loss_moves_flat_rows_as_images():
  seen = []
  loss_fn = lambda params, x, rng: (seen.append(x) or jnp.sum(x), {})  # noqa: E731
  flat = jnp.asarray(_blob()).reshape(1, -1)
  augment.augmented_loss(loss_fn, (16, 16, 1))(None, flat, jax.random.key(0))
  assert seen[0].shape == flat.shape and not np.allclose(seen[0], flat)


def test_pretraining_with_augmentation_learns_and_resumes_exactly(digits, tmp_path, logged):
  """--config.pretrain.augment: the loss still falls, the run differs from the clean one, and a run stopped
  after 2 epochs and resumed gives the uninterrupted run's parameters (the transforms come from the step keys)."""
  from configs import benchmark as benchmark_config
  from udl_jax import models, train
  config = benchmark_config.get_config()
  config.model.dims = (32, 16, 6)
  cfg = config.pretrain
  cfg.epochs, cfg.checkpoint_every, cfg.augment = 4, 2, True
  model = models.from_config(config, digits.image_shape)
  x = digits.flat[:1024]

  def fit(workdir, augment=True, on_epoch=None):
    cfg.augment = augment
    return train.fit('ae', model, config.model, cfg, x, None, 0, workdir, on_epoch=on_epoch,
                     image_shape=digits.image_shape)

  def killed_after_epoch_2(epoch, row):
    if epoch == 2:
      raise KeyboardInterrupt

  state, history = fit(tmp_path / 'whole')
  assert history[-1]['loss'] < history[0]['loss']
  with pytest.raises(KeyboardInterrupt):
    fit(tmp_path / 'resumed', on_epoch=killed_after_epoch_2)
  resumed, _ = fit(tmp_path / 'resumed')
  assert any(line.startswith('resumed from') and line.endswith('at epoch 2') for line in logged)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(a, b)
  clean, _ = fit(tmp_path / 'clean', augment=False)
  assert not np.allclose(jax.tree.leaves(clean.params)[0], jax.tree.leaves(state.params)[0])

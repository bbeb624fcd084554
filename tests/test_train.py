"""Autoencoder training: every objective learns, runs are reproducible, resumable and fail clearly."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest

from udl_jax import autoencoder, checkpoint, config, losses, models, train
from udl_jax.errors import UserError

N_TRAIN = 512


class Killed(Exception):
  """Stands in for a kill between two epochs."""


def _model_cfg(name, **overrides):
  cfg = config.model_block(name)
  cfg.dims = (32, 16, 4)
  cfg.features = (16, 8)   # conv: two poolings, 8x8 -> 2x2
  cfg.conv_features = (8, 16, 16)
  cfg.hidden, cfg.latent = 32, 4
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _train_cfg(**overrides):
  cfg = config.train_block()
  cfg.epochs, cfg.batch_size, cfg.checkpoint_every = 4, 64, 1
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _fit(digits, name, model_cfg=None, train_cfg=None, seed=0, n=N_TRAIN, x_val=None, **kwargs):
  model_cfg = model_cfg or _model_cfg(name)
  train_cfg = train_cfg or _train_cfg()
  model = models.make_model(name, digits.image_shape, model_cfg)
  x = models.model_input(name, digits.x)
  state, history = train.fit(name, model, model_cfg, train_cfg, x[:n], x_val, seed, **kwargs)
  return model, jax.device_get(state.params), history


def _assert_trees_equal(a, b, atol=0.0):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) > 0
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


@pytest.fixture(scope='module')
def runs(digits):
  """Training runs shared by several tests (each one compiles; the CPU is shared), made on first use."""
  cache = {}

  def get(key):
    if key not in cache:
      if key == 'ae':  # the reference: 4 epochs, seed 0, no checkpoints
        cache[key] = _fit(digits, 'ae')
      elif key == 'sparse_ae':
        cache[key] = _fit(digits, 'sparse_ae', _model_cfg('sparse_ae', sparsity_weight=0.1))
      elif key == 'vae':
        cache[key] = _fit(digits, 'vae', train_cfg=_train_cfg(epochs=6))
      elif key == 'conv_ae':
        cache[key] = _fit(digits, 'conv_ae', train_cfg=_train_cfg(epochs=5, batch_size=32, learning_rate=3e-3),
                          n=1000)
      elif key == 'dae':
        cache[key] = _fit(digits, 'dae', train_cfg=_train_cfg(epochs=8, batch_size=32, learning_rate=3e-3),
                          n=1000)
    return cache[key]
  return get


# -------------------------------------------------------------------------------------------- learning

@pytest.mark.parametrize('name', models.MODEL_NAMES)
def test_loss_falls(runs, name):
  _, params, history = runs(name)
  losses_ = [h['loss'] for h in history]
  assert len(history) == {'vae': 6, 'dae': 8, 'conv_ae': 5}.get(name, 4)
  assert [h['epoch'] for h in history] == list(range(1, len(history) + 1))
  assert all(np.isfinite(losses_))
  assert losses_[-1] < 0.9 * losses_[0], losses_
  assert all(h['samples_per_s'] > 0 for h in history)
  for leaf in jax.tree.leaves(params):
    assert np.isfinite(leaf).all()


def test_vae_loss_is_negative_elbo(runs, digits):
  model, params, history = runs('vae')
  for h in history:
    np.testing.assert_allclose(h['loss'], h['nll'] + h['kl'], rtol=1e-5)
    assert h['kl'] > 0
  assert history[-1]['nll'] < history[0]['nll']
  # The trained VAE has a higher ELBO than its untrained start on held-out images.
  x_val = digits.flat[N_TRAIN:N_TRAIN + 256]
  trained = autoencoder.evaluate('vae', model, params, x_val, _model_cfg('vae'), 0)
  untrained_params = train.init_state(model, digits.flat[:1], train.make_optimizer(_train_cfg()),
                                      jax.random.fold_in(jax.random.key(0), 0)).params
  untrained = autoencoder.evaluate('vae', model, untrained_params, x_val, _model_cfg('vae'), 0)
  assert trained['val_elbo'] > untrained['val_elbo'] + 1.0


def test_sparse_penalty_lowers_activations(runs, digits):
  """Same architecture, init and data; only the L1 activity penalty (weight 0.1) differs."""
  ae_model, ae_params, _ = runs('ae')
  sp_model, sp_params, sp_history = runs('sparse_ae')
  x_val = digits.flat[N_TRAIN:N_TRAIN + 256]
  cfg = _model_cfg('sparse_ae')
  plain = autoencoder.evaluate('sparse_ae', ae_model, ae_params, x_val, cfg, 0)
  sparse = autoencoder.evaluate('sparse_ae', sp_model, sp_params, x_val, cfg, 0)
  assert sparse['mean_abs_activation'] < 0.8 * plain['mean_abs_activation'], (plain, sparse)
  assert {'mse', 'mean_abs_activation'} <= set(sp_history[-1])
  # The reported loss is the reconstruction plus the weighted penalty.
  h = sp_history[-1]
  assert h['loss'] > h['mse']


def test_denoiser_output_is_cleaner_than_its_input(runs, digits):
  model, params, _ = runs('dae')
  x_val = digits.x[1200:1500]  # not trained on
  out = autoencoder.evaluate('dae', model, params, x_val, _model_cfg('dae'), 0)
  assert out['psnr_denoised_db'] > out['psnr_noisy_db'] + 1.0, out
  # and cleaner than the best constant guess (the mean training image): it uses the noisy input
  mean_image = digits.x[:1000].mean(0, keepdims=True)
  assert out['psnr_denoised_db'] > float(losses.psnr(np.broadcast_to(mean_image, x_val.shape), x_val)), out


# --------------------------------------------------------------------------------- reproducible, resumable

def test_same_seed_same_params(runs, digits):
  _, params, history = runs('ae')
  _, again, history2 = _fit(digits, 'ae')
  _assert_trees_equal(params, again)
  assert [h['loss'] for h in history] == [h['loss'] for h in history2]
  # and the seed matters: fit initialises from fold_in(key(seed), 0)
  model = models.make_model('ae', digits.image_shape, _model_cfg('ae'))
  tx = train.make_optimizer(_train_cfg())
  init = [train.init_state(model, digits.flat[:1], tx, jax.random.fold_in(jax.random.key(s), 0)).params
          for s in (0, 1)]
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init[0]), jax.tree.leaves(init[1])))


def _interrupt_after(epoch):
  def on_epoch(e, row):
    if e == epoch:
      raise Killed
  return on_epoch


def test_kill_and_resume_equals_uninterrupted(runs, digits, tmp_path):
  _, reference, ref_history = runs('ae')
  with pytest.raises(Killed):
    _fit(digits, 'ae', ckpt_dir=tmp_path, on_epoch=_interrupt_after(2))
  assert checkpoint.manager(tmp_path).latest_step() == 2
  seen = []
  _, resumed, history = _fit(digits, 'ae', ckpt_dir=tmp_path, on_epoch=lambda e, row: seen.append(e))
  assert seen == [3, 4]  # it resumed instead of starting over
  _assert_trees_equal(resumed, reference, atol=1e-7)
  assert [h['epoch'] for h in history] == [1, 2, 3, 4]
  np.testing.assert_allclose([h['loss'] for h in history], [h['loss'] for h in ref_history], rtol=0, atol=1e-7)
  # A finished run called again trains nothing and returns the same parameters.
  _, again, history_again = _fit(digits, 'ae', ckpt_dir=tmp_path, on_epoch=lambda e, row: seen.append(e))
  assert seen == [3, 4] and len(history_again) == 4
  _assert_trees_equal(again, reference, atol=1e-7)


def test_half_written_checkpoint_does_not_break_resume(runs, digits, tmp_path):
  """A kill during orbax's save leaves `<step>.orbax-checkpoint-tmp-<timestamp>` behind, never `<step>`."""
  _, reference, _ = runs('ae')
  with pytest.raises(Killed):
    _fit(digits, 'ae', ckpt_dir=tmp_path, on_epoch=_interrupt_after(2))
  partial = tmp_path / '3.orbax-checkpoint-tmp-1723456789012345'
  shutil.copytree(tmp_path / '2', partial)
  for junk in partial.rglob('commit_success.txt'):
    junk.unlink()
  shutil.rmtree(partial / 'state' / 'd')  # the array data never got written
  (partial / '_CHECKPOINT_METADATA').write_text('{"trunc')
  assert checkpoint.manager(tmp_path).latest_step() == 2
  seen = []
  _, resumed, history = _fit(digits, 'ae', ckpt_dir=tmp_path, on_epoch=lambda e, row: seen.append(e))
  assert seen == [3, 4]
  _assert_trees_equal(resumed, reference, atol=1e-7)
  assert len(history) == 4
  assert checkpoint.manager(tmp_path).latest_step() == 4


# ----------------------------------------------------------------------------------------- failing well

def test_non_finite_loss_is_a_user_error_and_saves_nothing(digits, tmp_path):
  cfg = _train_cfg(optimizer='sgd', learning_rate=1e30, momentum=0.9)
  seen = []
  with pytest.raises(UserError) as e:
    _fit(digits, 'ae', train_cfg=cfg, ckpt_dir=tmp_path, on_epoch=lambda ep, row: seen.append(ep))
  assert 'non-finite' in str(e.value) and 'epoch 1' in str(e.value)
  assert seen == []
  assert checkpoint.manager(tmp_path).latest_step() is None
  assert not [p for p in tmp_path.iterdir() if p.name[:1].isdigit()]


def test_pretraining_stops_when_the_autoencoder_has_collapsed(digits, caplog, tmp_path):
  """SGD with lr 10 kills a layer's ReLUs in the first steps and the loss stays finite: pretraining stops at the
  second collapse check in a row instead of running all its epochs, says why, and a resumed run stops at the same
  epoch with the same parameters. A run that learns goes on past the checks."""
  cfg = _train_cfg(epochs=50, optimizer='sgd', learning_rate=10.0, momentum=0.9)
  with caplog.at_level('INFO', logger='udl_jax'):
    _, params, history = _fit(digits, 'ae', train_cfg=cfg)
  stop = 2 * train.COLLAPSE_CHECK_EVERY
  assert len(history) == stop
  assert any(f'stops at epoch {stop} of 50' in r.getMessage() and 'collapsed' in r.getMessage()
             for r in caplog.records)
  cfg.checkpoint_every = 7  # killed after epoch 14, between the two checks: the first one's finding is saved
  with pytest.raises(Killed):
    _fit(digits, 'ae', train_cfg=cfg, ckpt_dir=tmp_path, on_epoch=_interrupt_after(14))
  _, resumed, resumed_history = _fit(digits, 'ae', train_cfg=cfg, ckpt_dir=tmp_path)
  assert len(resumed_history) == stop
  _assert_trees_equal(resumed, params)
  _, _, healthy = _fit(digits, 'ae', train_cfg=_train_cfg(epochs=stop + 1))
  assert len(healthy) == stop + 1


def test_early_stopping_when_validation_cannot_improve(digits):
  cfg = _train_cfg(epochs=10, patience=1, learning_rate=1e-12)
  x_val = digits.flat[N_TRAIN:N_TRAIN + 128]
  _, _, history = _fit(digits, 'ae', train_cfg=cfg, x_val=x_val)
  assert len(history) < 10
  assert len(history) == 2  # epoch 1 sets the best, epoch 2 does not beat it: patience 1 is used up
  assert history[1]['val_loss'] >= history[0]['val_loss']


def test_batch_larger_than_data(digits):
  with pytest.raises(UserError) as e:
    _fit(digits, 'ae', train_cfg=_train_cfg(batch_size=1024), n=100)
  assert '1024' in str(e.value) and '100' in str(e.value)


def test_split_train_val():
  tr, va = train.split_train_val(1000, 0.1, seed=3)
  assert len(va) == 100 and len(tr) == 900
  assert not set(tr) & set(va) and set(tr) | set(va) == set(range(1000))
  tr2, va2 = train.split_train_val(1000, 0.1, seed=3)
  np.testing.assert_array_equal(va, va2)
  assert not np.array_equal(va, train.split_train_val(1000, 0.1, seed=4)[1])


@pytest.mark.parametrize('partial_batch', [False, True])
def test_looped_epoch_matches_scanned_epoch(digits, partial_batch):
  """The Python-loop epoch (used for convolutions on the CPU) takes exactly the scan's steps, Keras' last
  partial batch (here 52 rows) included."""
  model = models.make_model('ae', digits.image_shape, _model_cfg('ae'))
  x = digits.flat[:N_TRAIN - 12]  # 500 rows: 7 batches of 64 and 52 left over
  loss_fn = losses.make_loss_fn('ae', model, _model_cfg('ae'))
  tx = train.make_optimizer(_train_cfg())
  mesh = train.parallel.make_mesh()
  out = []
  for scan in (True, False):
    state = train.init_state(model, x, tx, jax.random.key(0))
    epoch = train.make_train_epoch(loss_fn, 64, mesh, scan=scan, partial_batch=partial_batch)
    state, metrics = epoch(state, x, jax.random.key(1))
    out.append((jax.device_get(state.params), float(metrics['loss'])))
  _assert_trees_equal(out[0][0], out[1][0], atol=1e-6)
  np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-6)


def test_partial_batch_trains_every_row_once_and_leaves_the_full_batches_as_they_were():
  """Keras' fit (DEC-keras's pretraining) also steps on an epoch's last, smaller batch: with partial_batch the
  epoch's batches cover every row exactly once; the full batches are those of the default epoch, which drops
  the rows left over."""
  key = jax.random.key(3)
  (full, keys), (rest, rest_key) = train._epoch_plan(100, key, 32, partial=4)
  np.testing.assert_array_equal(np.sort(np.r_[np.ravel(full), rest]), np.arange(100))
  default, default_keys = train._epoch_plan(100, key, 32)
  np.testing.assert_array_equal(full, default)
  np.testing.assert_array_equal(jax.random.key_data(keys), jax.random.key_data(default_keys))
  assert train.partial_batch_size(100, 32, train.parallel.make_mesh()) == 4


def test_the_status_line_names_pretraining_apart_from_a_methods_own_training(digits, monkeypatch):
  """A method that trains its own objective here (vade) is not shown as the autoencoder's pretraining."""
  from udl_jax import progress
  labels, start_phase = [], progress.start_phase
  record = lambda label, *a, **k: (labels.append(label), start_phase(label, *a, **k))  # noqa: E731
  monkeypatch.setattr(progress, 'start_phase', record)
  model_cfg = _model_cfg('ae')
  model = models.make_model('ae', digits.image_shape, model_cfg)
  _fit(digits, 'ae', model_cfg, _train_cfg(epochs=1))
  _fit(digits, 'ae', model_cfg, _train_cfg(epochs=1), loss_fn=losses.make_loss_fn('ae', model, model_cfg))
  assert labels == ['ae pretraining', 'ae training']

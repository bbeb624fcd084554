"""VaDE: its ELBO terms against a numpy reference written another way, and learning on digits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from udl_jax import metrics, methods, models, parallel
from udl_jax.errors import UserError
from udl_jax.methods import vade


def _random_case(seed=0, batch=5, k=3, d=4):
  rng = np.random.default_rng(seed)
  prior = {'pi_logits': rng.normal(size=k), 'means': rng.normal(size=(k, d)),
           'log_vars': rng.normal(size=(k, d)) * 0.3}
  mean, logvar, z = rng.normal(size=(batch, d)), rng.normal(size=(batch, d)) * 0.3, rng.normal(size=(batch, d))
  return prior, mean, logvar, z


def _numpy_log_gamma(z, prior):
  """log q(c|z) with scipy's Gaussian densities."""
  log_pi = prior['pi_logits'] - logsumexp(prior['pi_logits'])
  joint = np.stack([log_pi[c] + multivariate_normal(prior['means'][c],
                                                     np.diag(np.exp(prior['log_vars'][c]))).logpdf(z)
                    for c in range(len(log_pi))], axis=1)
  return joint - logsumexp(joint, axis=1, keepdims=True)


def test_responsibilities_match_scipys_gaussian_densities():
  prior, _, _, z = _random_case()
  got = np.asarray(vade.log_responsibilities(jnp.asarray(z, jnp.float32),
                                             jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), prior)))
  np.testing.assert_allclose(got, _numpy_log_gamma(z, prior), atol=1e-4)
  np.testing.assert_allclose(np.exp(got).sum(1), 1.0, atol=1e-5)


def test_latent_kl_is_the_expected_gaussian_kl_plus_the_cluster_kl():
  """sum_c gamma_c KL(N(m, v) || N(mu_c, s_c)) + KL(gamma || pi), with the textbook KL between diagonal Gaussians."""
  prior, mean, logvar, z = _random_case(1)
  log_gamma = _numpy_log_gamma(z, prior)
  gamma, log_pi = np.exp(log_gamma), prior['pi_logits'] - logsumexp(prior['pi_logits'])
  v, s = np.exp(logvar)[:, None, :], np.exp(prior['log_vars'])[None]
  gauss_kl = 0.5 * np.sum(np.log(s / v) + (v + (mean[:, None, :] - prior['means'][None]) ** 2) / s - 1, axis=-1)
  want = np.sum(gamma * gauss_kl, axis=1) + np.sum(gamma * (log_gamma - log_pi), axis=1)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  got = vade.latent_kl(f32(mean), f32(logvar), f32(z), jax.tree.map(f32, prior))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
  # A posterior equal to one component's Gaussian, with that component certain: nothing but the cluster KL left.
  one = {'pi_logits': np.array([0.0, 0.0]), 'means': np.zeros((2, 4)), 'log_vars': np.zeros((2, 4))}
  got = vade.latent_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)), jnp.zeros((1, 4)), jax.tree.map(f32, one))
  np.testing.assert_allclose(np.asarray(got), [0.0], atol=1e-6)  # both components equal: gamma = pi


def test_reconstruction_terms():
  x = jnp.asarray([[0.0, 1.0, 0.5]])
  out = jnp.asarray([[0.5, 0.5, 0.5]])
  for variance in (1.0, 0.01):
    density = np.exp(-(np.asarray(out) - np.asarray(x)) ** 2 / (2 * variance)) / np.sqrt(2 * np.pi * variance)
    want = -np.sum(np.log(density))
    np.testing.assert_allclose(vade.reconstruction_nll(out, x, 'gaussian', variance), [want], rtol=1e-5)
  logits = jnp.asarray([[0.0, 2.0, -1.0]])
  p = jax.nn.sigmoid(logits)
  want = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p))
  np.testing.assert_allclose(vade.reconstruction_nll(logits, x, 'bernoulli'), [want], rtol=1e-5)


def test_vade_learns_on_digits(pretrained, digits, tmp_path):
  model, params, x, _ = pretrained
  seed = methods.Seed(model=model, ae_params=params, x=x, y=digits.y, n_clusters=10, init=None, seed=0,
                      config=None, workdir=tmp_path, mesh=parallel.make_mesh())
  labels, q, history = methods.get('vade', epochs=10).run(seed)
  assert labels.shape == (len(x),) and q.shape == (len(x), 10)
  np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(labels, q.argmax(1))
  losses = [h['loss'] for h in history if 'loss' in h]
  assert len(losses) == 10 and losses[0] - losses[-1] > 0.05 * abs(losses[0]), losses  # the negative ELBO falls
  # The trajectory: the clusters' scores at the start (epoch 0: the diagonal GMM VaDE starts from) and at each
  # checkpoint epoch (here only the 10th, the last), in the history.
  assert [h['epoch'] for h in history if 'nmi' in h] == [0, 10]
  start = vade.responsibilities(model, vade.initial_params(model, params, x, 10, 0, seed.mesh), x, seed.mesh)
  unclocked = lambda rows: [{k: v for k, v in row.items() if k != 'seconds'} for row in rows]  # noqa: E731
  assert unclocked(history[:1]) == [{'epoch': 0, **metrics.evaluate(digits.y, start.argmax(1))}]
  assert history[0]['seconds'] > 0  # its setup (the GMM), counted in the trial's time
  assert {k: history[-1][k] for k in ('acc', 'nmi', 'ari')} == metrics.evaluate(digits.y, labels)
  nmi_start, nmi_end = history[0]['nmi'], history[-1]['nmi']
  print('vade on digits: loss', losses[0], '->', losses[-1], 'NMI', nmi_start, '->', nmi_end)
  assert nmi_end > 0.5 and nmi_end > nmi_start - 0.05, (nmi_start, nmi_end)
  # Re-running in the same folder resumes the finished training: the same labels, no epoch trained again.
  again, _, again_history = methods.get('vade', epochs=10).run(seed)
  np.testing.assert_array_equal(again, labels)
  assert again_history[1:] == history[1:] and unclocked(again_history[:1]) == unclocked(history[:1])  # setup redone


def test_vade_needs_the_dense_autoencoder(digits, tmp_path):
  model = models.make_model('vae', digits.image_shape)
  seed = methods.Seed(model=model, ae_params=None, x=None, y=None, n_clusters=10, init=None, seed=0, config=None,
                      workdir=tmp_path, mesh=None)
  with pytest.raises(UserError, match='model.name=ae'):
    methods.get('vade').run(seed)


def test_vade_bernoulli_recipe_on_digits(digits, tmp_path):
  """VaDE's MNIST recipe: an autoencoder with a sigmoid output pretrained on binary cross-entropy, then the
  ELBO with a Bernoulli likelihood of its logits. Pretraining and the ELBO both fall; VaDE clusters digits."""
  from udl_jax import config, train
  model_cfg = config.model_block('ae')
  model_cfg.dims, model_cfg.output_activation, model_cfg.reconstruction = (256, 64, 10), 'sigmoid', 'bernoulli'
  train_cfg = config.train_block()
  train_cfg.epochs = 30
  model = models.make_model('ae', digits.image_shape, model_cfg)
  x = models.model_input('ae', digits.x)
  state, history = train.fit('ae', model, model_cfg, train_cfg, x, None, seed=0)
  assert history[-1]['bce'] < 0.8 * history[0]['bce'] and history[-1]['mse'] < history[0]['mse'], history[::10]
  seed = methods.Seed(model=model, ae_params=jax.device_get(state.params), x=x, y=digits.y, n_clusters=10,
                      init=None, seed=0, config=None, workdir=tmp_path, mesh=parallel.make_mesh())
  labels, _, vade_history = methods.get('vade', epochs=8, likelihood='bernoulli').run(seed)
  elbo = [h['loss'] for h in vade_history if 'loss' in h]
  nmi = metrics.evaluate(digits.y, labels)['nmi']
  print('bernoulli vade on digits: loss', elbo[0], '->', elbo[-1], 'NMI', nmi)
  assert elbo[-1] < elbo[0] and nmi > 0.5, (elbo, nmi)


def test_vade_killed_mid_training_resumes_to_the_uninterrupted_result(pretrained, digits, tmp_path, monkeypatch,
                                                                      logged):
  """A 70k VaDE seed takes hours on a CPU core and is stopped and resumed across sessions: killed after its
  epoch-10 checkpoint, the resumed run trains epochs 11-12 at the decayed learning rate (the schedule's step count
  is in the restored optimiser state) with the same step keys, and ends where the uninterrupted run does; the
  scores tracked at epoch 10 come back with the checkpoint."""
  model, params, x, _ = pretrained

  def run(workdir):
    seed = methods.Seed(model=model, ae_params=params, x=x, y=digits.y, n_clusters=10, init=None, seed=0,
                        config=None, workdir=workdir, mesh=parallel.make_mesh())
    return methods.get('vade', epochs=12).run(seed)

  labels, q, history = run(tmp_path / 'whole')
  fit = vade.train.fit

  def killed_after_epoch_10(*args, **kwargs):
    def on_epoch(epoch, rows):
      if epoch == 10:
        raise KeyboardInterrupt
    return fit(*args, on_epoch=on_epoch, **kwargs)
  monkeypatch.setattr(vade.train, 'fit', killed_after_epoch_10)
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / 'resumed')
  monkeypatch.setattr(vade.train, 'fit', fit)
  resumed_labels, resumed_q, resumed_history = run(tmp_path / 'resumed')
  assert any(line.startswith('resumed from') and line.endswith('at epoch 10') for line in logged), logged
  np.testing.assert_array_equal(resumed_labels, labels)
  np.testing.assert_array_equal(resumed_q, q)
  scores = lambda rows: [{k: v for k, v in h.items() if k not in ('seconds', 'samples_per_s')} for h in rows]  # noqa: E731
  assert scores(resumed_history) == scores(history)
  assert [h['epoch'] for h in history if 'acc' in h] == [0, 10, 12]  # the start, the checkpoints and the end

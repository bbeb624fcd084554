"""Autoencoder objectives as pure functions `loss_fn(params, x, rng) -> (loss, aux)`.

  ae         mean squared reconstruction error (DEC's pretraining loss); conv_ae (DCEC's CAE) too. With
             model.reconstruction='bernoulli' (dense models, sigmoid output): the mean binary cross-entropy of
             the output's logits, VaDE's MNIST autoencoder
  sparse_ae  the same plus `sparsity_weight` x mean |activation| of the chosen hidden layers (L1 activity)
  dae        reconstruct the clean image from a salt-and-pepper corrupted copy
  vae        negative ELBO: summed Bernoulli negative log-likelihood + KL(q(z|x) || N(0, I)), mean over batch
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[dict, jax.Array, jax.Array], tuple[jax.Array, dict]]


def salt_and_pepper(rng: jax.Array, x: jax.Array, amount: float = 0.2) -> jax.Array:
  """Sets a random `amount` of the pixels to 0 or 1 (half each), independently per image."""
  hit_key, value_key = jax.random.split(rng)
  hit = jax.random.uniform(hit_key, x.shape) < amount
  salt = jax.random.bernoulli(value_key, 0.5, x.shape).astype(x.dtype)
  return jnp.where(hit, salt, x)


def mse(recon: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.mean((recon - x) ** 2)


def psnr(recon: jax.Array, clean: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio in dB for images in [0, 1]."""
  return -10.0 * jnp.log10(jnp.mean((recon - clean) ** 2) + 1e-12)


def mean_abs_activation(hidden: list[jax.Array]) -> jax.Array:
  """Mean |activation| per layer, averaged over layers: the sparse penalty, and how sparse a model is."""
  return jnp.mean(jnp.stack([jnp.mean(jnp.abs(h)) for h in hidden]))


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent dimensions, per sample."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean ** 2 - 1.0 - logvar, axis=-1)


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
  """Bernoulli negative log-likelihood of x in [0, 1] under `logits`, summed over pixels, per sample."""
  return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)


RECONSTRUCTIONS = ('mse', 'bernoulli')


def reconstruction_error(out: dict, x: jax.Array, kind: str) -> tuple[jax.Array, dict]:
  """(loss, aux) of a dense or conv autoencoder's output: the mean squared error of `recon`, or the mean binary
  cross-entropy of the output layer's `logits` (computed from logits, where it is finite for any output)."""
  if kind == 'bernoulli':
    loss = jnp.mean(optax.sigmoid_binary_cross_entropy(out['logits'], x))
    return loss, {'bce': loss, 'mse': mse(out['recon'], x)}
  loss = mse(out['recon'], x)
  return loss, {'mse': loss}


def make_loss_fn(model_name: str, model, config) -> LossFn:
  """The training objective of a model family; `config` is the run's `model` block."""
  kind = config.get('reconstruction', 'mse') if config is not None else 'mse'
  if model_name in ('ae', 'conv_ae'):
    def loss_fn(params, x, rng):
      return reconstruction_error(model.apply(params, x), x, kind)
  elif model_name == 'sparse_ae':
    weight, layers = config.sparsity_weight, config.sparsity_layers

    def loss_fn(params, x, rng):
      out = model.apply(params, x)
      hidden = out['hidden'] if layers == 'all' else [out['z']]
      l1 = mean_abs_activation(hidden)
      rec, aux = reconstruction_error(out, x, kind)
      return rec + weight * l1, {**aux, 'mean_abs_activation': l1}
  elif model_name == 'dae':
    amount = config.noise_amount

    def loss_fn(params, x, rng):
      loss = mse(model.apply(params, salt_and_pepper(rng, x, amount))['recon'], x)
      return loss, {'mse': loss}
  elif model_name == 'vae':
    def loss_fn(params, x, rng):
      out = model.apply(params, x, rng)
      nll, kl = jnp.mean(bernoulli_nll(out['logits'], x)), jnp.mean(gaussian_kl(out['mean'], out['logvar']))
      return nll + kl, {'nll': nll, 'kl': kl}
  else:
    raise ValueError(f'no loss for model {model_name!r}')
  return loss_fn

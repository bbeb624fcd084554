"""VaDE (Jiang et al. 2017, "Variational Deep Embedding"): a VAE whose prior is a Gaussian mixture,
p(z) = sum_c pi_c N(z; mu_c, diag sigma2_c), trained on the ELBO; clusters are argmax of q(c | x).

Initialised as the paper does: encoder and decoder from the seed's pretrained autoencoder (its embedding layer
gives the posterior mean), a new log-variance head on the last hidden layer, and the mixture from a diagonal GMM
fitted to the embedding. The paper's MNIST settings: Adam 0.002 (eps 1e-4), x0.9 every 10 epochs down to
0.0002, batch 100; it ran 3000 epochs, the default here is 300 (`cluster.method_kwargs.vade.epochs`).

Where this differs from the reference code (slim1017/VaDE), and why:
  - pi = softmax(logits) and sigma2 = exp(log sigma2): the reference trains them raw, unconstrained;
  - the likelihood follows the pretrained decoder: for the linear-output autoencoder the benchmark pretrains
    (on squared error), a Gaussian whose variance is that autoencoder's mean squared reconstruction error (its
    maximum-likelihood value). With unit variance (the reference's 'linear' datatype, weight 1 on the summed
    squared error) the KL term outweighs reconstructing images in [0, 1], and every point fell into one
    cluster on digits. `likelihood='bernoulli'` (the reference's MNIST) reads the logits of a sigmoid output,
    of an autoencoder pretrained on binary cross-entropy (`model.reconstruction='bernoulli'`; `validate` refuses
    it on the squared-error one);
  - the ELBO keeps its constants (the reference drops log 2 pi from the entropy term): same gradients;
  - labels come from the posterior mean, not a sample, so that a finished model labels deterministically;
  - pi starts at the GMM's weights (the reference takes only its means and variances and starts pi at 1/K);
  - the autoencoder: the reference ships pretrained weights, and its pretraining code was never published
    (slim1017/VaDE issues 2 and 5, where others' own pretraining ended with every point in one cluster).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn.mixture import GaussianMixture

from udl_jax import log, losses, metrics, models, parallel, train
from udl_jax.errors import UserError
from udl_jax.methods import base, register

LOG_2PI = float(np.log(2 * np.pi))
LIKELIHOODS = ('gaussian', 'bernoulli')


def log_responsibilities(z: jax.Array, prior: dict) -> jax.Array:
  """log q(c | z) (B, K) = log of pi_c N(z; mu_c, sigma2_c), normalised over the clusters."""
  log_pi = jax.nn.log_softmax(prior['pi_logits'])
  log_pdf = -0.5 * jnp.sum(LOG_2PI + prior['log_vars']
                           + (z[:, None, :] - prior['means']) ** 2 / jnp.exp(prior['log_vars']), axis=-1)
  return jax.nn.log_softmax(log_pi + log_pdf, axis=-1)


def latent_kl(mean: jax.Array, logvar: jax.Array, z: jax.Array, prior: dict) -> jax.Array:
  """Per sample, the ELBO's latent part, E_q(c|x)[KL(q(z|x) || p(z|c))] + KL(q(c|x) || p(c)), with
  q(c|x) taken at the sampled z (as the paper does)."""
  log_gamma = log_responsibilities(z, prior)
  gamma = jnp.exp(log_gamma)
  # E_q(z|x)[-log p(z | c)] for each c: the Gaussian cross-entropy, in closed form.
  cross = 0.5 * jnp.sum(LOG_2PI + prior['log_vars'] + (jnp.exp(logvar)[:, None, :]
                                                       + (mean[:, None, :] - prior['means']) ** 2)
                        / jnp.exp(prior['log_vars']), axis=-1)
  entropy = 0.5 * jnp.sum(LOG_2PI + 1.0 + logvar, axis=-1)  # H(q(z | x))
  kl_clusters = jnp.sum(gamma * (log_gamma - jax.nn.log_softmax(prior['pi_logits'])), axis=-1)
  return jnp.sum(gamma * cross, axis=-1) - entropy + kl_clusters


def reconstruction_nll(out: jax.Array, x: jax.Array, likelihood: str, variance: float = 1.0) -> jax.Array:
  """Per sample -log p(x | z): a Gaussian of `variance` per pixel around `out`, or Bernoulli with logits `out`."""
  if likelihood == 'gaussian':
    return 0.5 * jnp.sum((out - x) ** 2 / variance + jnp.log(2 * jnp.pi * variance), axis=-1)
  return losses.bernoulli_nll(out, x)


def _encode(model, ae, x):
  """(posterior mean, last hidden layer) of the pretrained encoder."""
  return model.apply(ae, x, method=model.encode_with_hidden)


def make_loss(model, likelihood: str, variance: float = 1.0):
  """loss_fn(params, x, key) -> (mean negative ELBO, aux) for `train.fit`."""
  def loss_fn(params, x, key):
    mean, hidden = _encode(model, params['ae'], x)
    logvar = hidden.astype(jnp.float32) @ params['logvar']['kernel'] + params['logvar']['bias']
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    decode = model.decode_logits if likelihood == 'bernoulli' else model.decode
    recon = reconstruction_nll(model.apply(params['ae'], z, method=decode), x, likelihood, variance)
    kl = latent_kl(mean, logvar, z, params['prior'])
    return jnp.mean(recon + kl), {'reconstruction': jnp.mean(recon), 'kl': jnp.mean(kl)}
  return loss_fn


def initial_params(model, ae_params, x: np.ndarray, n_clusters: int, seed: int, mesh) -> dict:
  """The pretrained autoencoder, a glorot-initialised log-variance head (zero bias, as Keras's Dense), and
  the prior from a diagonal GMM on the embedding."""
  z = train.embed(model, ae_params, x, mesh).astype(np.float64)
  gmm = GaussianMixture(n_clusters, covariance_type='diag', random_state=seed).fit(z)
  hidden = model.dims[-2]
  kernel = jax.nn.initializers.glorot_uniform()(jax.random.fold_in(jax.random.key(seed), 5), (hidden, z.shape[1]))
  return {'ae': ae_params, 'logvar': {'kernel': kernel, 'bias': jnp.zeros(z.shape[1])},
          'prior': {'pi_logits': jnp.asarray(np.log(gmm.weights_), jnp.float32),
                    'means': jnp.asarray(gmm.means_, jnp.float32),
                    'log_vars': jnp.asarray(np.log(gmm.covariances_), jnp.float32)}}


def reconstruction_mse(model, ae_params, x: np.ndarray, mesh) -> float:
  """The pretrained autoencoder's mean squared reconstruction error per pixel over x."""
  def sse(p, rows):
    return jnp.sum((model.apply(p, rows)['recon'] - rows) ** 2, axis=-1)
  return float(np.sum(parallel.to_host(parallel.sharded_map(sse, mesh)(
      parallel.replicate(ae_params, mesh), parallel.replicate(x, mesh)))) / x.size)


def responsibilities(model, params, x: np.ndarray, mesh) -> np.ndarray:
  """q(c | x) at the posterior mean, for all rows of x."""
  def q(p, rows):
    return jnp.exp(log_responsibilities(_encode(model, p['ae'], rows)[0], p['prior']))
  return parallel.to_host(parallel.sharded_map(q, mesh)(parallel.replicate(params, mesh),
                                                        parallel.replicate(x, mesh)))


def run(seed: base.Seed, epochs: int, batch_size: int, learning_rate: float, decay: float, decay_every: int,
        min_learning_rate: float, likelihood: str):
  if not isinstance(seed.model, models.DenseAE):
    raise UserError('vade builds on the dense autoencoder: use model.name=ae (or sparse_ae)')
  if likelihood not in LIKELIHOODS:
    raise UserError(f"vade: unknown likelihood '{likelihood}'; valid: {', '.join(LIKELIHOODS)}")
  steps_per_epoch = len(seed.x) // batch_size
  if steps_per_epoch == 0:
    raise UserError(f'vade: batch_size {batch_size} is larger than the {len(seed.x)} samples')
  schedule = optax.exponential_decay(learning_rate, decay_every * steps_per_epoch, decay, staircase=True,
                                     end_value=min_learning_rate)
  cfg = ml_collections.ConfigDict({'epochs': epochs, 'batch_size': batch_size, 'patience': 0, 'val_fraction': 0.0,
                                   'checkpoint_every': max(1, min(10, epochs)), 'augment': False})
  t0 = time.perf_counter()
  init = initial_params(seed.model, seed.ae_params, seed.x, seed.n_clusters, seed.seed, seed.mesh)
  variance = reconstruction_mse(seed.model, seed.ae_params, seed.x, seed.mesh)
  # Epoch 0, the start: its setup's seconds (the history's seconds sum to the trial's time, also when resumed)
  # and, with labels, the scores of the diagonal GMM it starts from (not ae_gmm's full-covariance one). With
  # labels the scores also come every checkpoint (10 epochs; a pass over the data, not counted in the time):
  # whether VaDE moves its start up or down, and when, is in its metrics.jsonl.
  start = {'epoch': 0, 'seconds': time.perf_counter() - t0}
  track = None if seed.y is None else \
      (lambda params: metrics.evaluate(seed.y, responsibilities(seed.model, params, seed.x, seed.mesh).argmax(1)))
  if track:
    scores = track(init)
    start.update(scores)
    log.detail('vade seed %d start (its diagonal GMM): %s', seed.seed,
               ' '.join(f'{k} {v:.4f}' for k, v in scores.items()))
  state, history = train.fit('vade', seed.model, None, cfg, seed.x, None, seed.seed, seed.workdir / 'checkpoints',
                             seed.mesh, loss_fn=make_loss(seed.model, likelihood, variance),
                             tx=optax.adam(schedule, eps=1e-4), initial_params=init, track=track)
  q = responsibilities(seed.model, state.params, seed.x, seed.mesh)
  return q.argmax(1).astype(np.int32), q, [start] + history


@register('vade')
def vade(epochs: int = 300, batch_size: int = 100, learning_rate: float = 0.002, decay: float = 0.9,
         decay_every: int = 10, min_learning_rate: float = 0.0002, likelihood: str = 'gaussian') -> base.OwnTrainer:
  return base.OwnTrainer('vade', run=lambda seed: run(seed, epochs, batch_size, learning_rate, decay, decay_every,
                                                      min_learning_rate, likelihood))

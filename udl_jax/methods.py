"""Clustering methods by name: DEC, IDEC, and whatever a user registers.

A method is a loss on a batch, `loss(q, p, x, recon) -> scalar`, where q are the batch's soft assignments,
p its rows of the target distribution, x the batch and recon the autoencoder's reconstruction (None unless the
method `needs_decoder`), plus `target(q_all) -> p_all`, recomputed on the full data every `update_interval`
steps. The clustering loop (`udl_jax.dec`) never needs editing for a new method:

    from udl_jax import methods
    @methods.register('my_loss')
    def my_loss(weight: float = 1.0) -> methods.ClusteringMethod:
      return methods.ClusteringMethod('my_loss', loss=lambda q, p, x, recon: weight * jnp.mean((p - q) ** 2))

and then `--config.methods=dec,my_loss` (keyword arguments come from `cluster.method_kwargs`, optimiser
settings of its own from `cluster.method_overrides`).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import jax

from udl_jax import clustering, losses
from udl_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class ClusteringMethod:
  name: str
  loss: Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None], jax.Array]
  target: Callable[[jax.Array], jax.Array] = clustering.target_distribution
  needs_decoder: bool = False


_FACTORIES: dict[str, Callable[..., ClusteringMethod]] = {}


def register(name: str):
  """Decorator: registers a factory `(**hyperparameters) -> ClusteringMethod` under `name`."""
  def decorator(factory):
    _FACTORIES[name] = factory
    return factory
  return decorator


def names() -> tuple[str, ...]:
  return tuple(_FACTORIES)


def get(name: str, **hyperparameters) -> ClusteringMethod:
  if name not in _FACTORIES:
    raise UserError(f"unknown clustering method '{name}'; registered: {', '.join(names())}")
  factory = _FACTORIES[name]
  accepted = inspect.signature(factory).parameters
  unknown = sorted(set(hyperparameters) - set(accepted))
  if unknown and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
    raise UserError(f"clustering method '{name}' has no hyperparameter {', '.join(map(repr, unknown))} "
                    f"(cluster.method_kwargs.{name}); it takes: {', '.join(accepted) or 'none'}")
  return factory(**hyperparameters)


@register('dec')
def dec() -> ClusteringMethod:
  """DEC (Xie et al. 2016): KL(P || Q), encoder and centres trained, decoder dropped."""
  return ClusteringMethod('dec', loss=lambda q, p, x, recon: clustering.kl_divergence(p, q))


@register('idec')
def idec(gamma: float = 0.1) -> ClusteringMethod:
  """IDEC (Guo et al. 2017): L = L_r + gamma * KL(P || Q), gamma = 0.1, the decoder kept to preserve structure.

  This is the paper's (and its reference code's) weighting: the reconstruction term is the MSE, the clustering
  term is scaled by gamma.
  """
  return ClusteringMethod(
      'idec', needs_decoder=True,
      loss=lambda q, p, x, recon: losses.mse(recon, x) + gamma * clustering.kl_divergence(p, q))

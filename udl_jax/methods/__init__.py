"""Clustering methods by name: the built-in ones and whatever a user registers. One module per method family
(dec.py: dec, dec_da; idec.py: idec, idec_da, dcec).

Kinds (`base.py`): an `EmbeddingClusterer` labels the pretrained embedding (ae_gmm, n2d); a `FineTuner` is a
loss on the shared clustering loop (dec, idec, dcn, dkm, dec_da, idec_da, dcec); an `OwnTrainer` owns its model
and training (vade). Adding one touches no other module:

    from udl_jax import methods
    @methods.register('my_loss')
    def my_loss(weight: float = 1.0) -> methods.FineTuner:
      return methods.FineTuner('my_loss', loss=lambda b: weight * jnp.mean((b.p - b.q) ** 2))

and then `--config.imports=my_module --config.methods=dec,my_loss` (keyword arguments come from
`cluster.method_kwargs.my_loss`, optimiser settings of its own from `cluster.method_overrides.my_loss`).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from udl_jax.errors import UserError
from udl_jax.methods.base import (Batch, EmbeddingClusterer, FineTuner, Method, OwnTrainer, Seed,  # noqa: F401
                                  student_t)

# The two baselines every table starts with; the benchmark runs them itself (k-means is shared by all methods).
BASELINES = ('kmeans', 'ae_kmeans')


def needs_autoencoder(method: str) -> bool:
  """Whether `method` starts from the seed's pretrained autoencoder: all but raw-pixel KMeans."""
  return method != 'kmeans'


_FACTORIES: dict[str, Callable[..., Method]] = {}


def register(name: str):
  """Decorator: registers a factory `(**hyperparameters) -> method` under `name`."""
  def decorator(factory):
    if name in BASELINES:
      raise UserError(f"'{name}' is a built-in baseline; register the method under another name")
    _FACTORIES[name] = factory
    return factory
  return decorator


def names() -> tuple[str, ...]:
  return tuple(_FACTORIES)


def get(name: str, **hyperparameters) -> Method:
  if name not in _FACTORIES:
    raise UserError(f"unknown clustering method '{name}'; registered: {', '.join(names())}")
  factory = _FACTORIES[name]
  accepted = inspect.signature(factory).parameters
  unknown = sorted(set(hyperparameters) - set(accepted))
  if unknown and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
    raise UserError(f"clustering method '{name}' has no hyperparameter {', '.join(map(repr, unknown))} "
                    f"(cluster.method_kwargs.{name}); it takes: {', '.join(accepted) or 'none'}")
  return factory(**hyperparameters)


def import_plugins(modules: str) -> None:
  """Imports the comma-separated modules that register extra clustering methods (`--config.imports`)."""
  for name in filter(None, (m.strip() for m in modules.split(','))):
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise UserError(f"--config.imports: cannot import '{name}' ({e}); it must be importable from the "
                      'current directory or the installed packages') from e


from udl_jax.methods import dcn, dec, dkm, gmm, idec, n2d, vade  # noqa: E402,F401  (the built-ins register themselves)

"""What a clustering method is. Three kinds, each a frozen dataclass the benchmark runs without knowing more:

  EmbeddingClusterer  labels from the pretrained autoencoder's fixed embedding, no training (ae_gmm, n2d)
  FineTuner           a loss (and optional state) on the shared clustering loop, `udl_jax.dec` (dec, idec, dcn, dkm,
                      dec_da, idec_da, dcec)
  OwnTrainer          a method that owns its model and training (given the seed's data, autoencoder and k-means)

Every method of a seed starts from that seed's one pretrained autoencoder; fine-tuners also from its k-means.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from udl_jax import clustering


class Batch(NamedTuple):
  """What a fine-tuner's loss sees of one batch (jax arrays inside the jitted step)."""
  x: jax.Array             # the batch, model-ready
  z: jax.Array             # its embedding (differentiable)
  recon: jax.Array | None  # its reconstruction, when the method `needs_decoder`
  q: jax.Array             # its soft assignments under the method's `assign`
  p: jax.Array             # its rows of the target distribution (None-like zeros when `target` is None)
  centres: jax.Array       # the cluster centres (trainable parameters of the loop)
  state: Any               # the method's state (`init_state`), whole; gather rows with `idx`
  idx: jax.Array           # the batch's indices into the data
  interval: jax.Array      # how many target updates came before this step (a schedule's clock)


def student_t(alpha: float) -> Callable:
  """DEC's soft assignment as an `assign(z, centres, interval)`."""
  return lambda z, centres, interval: clustering.soft_assignment(z, centres, alpha)


@dataclasses.dataclass(frozen=True)
class FineTuner:
  """A loss on the shared clustering loop: encoder (and decoder) and centres trained from the k-means start.

  loss(batch) -> scalar. assign(z, centres, interval) -> q: the soft assignment (None: DEC's Student's t with
  `cluster.alpha`); the labels are argmax q. target(q_all) -> p_all, recomputed on the full data every
  update_interval steps (None: the method needs no target). A method with state between steps gives
  `init_state(labels, centres) -> state` and `update(state, centres, z, idx) -> (state, centres)`, run after
  every optimiser step on the batch's new embedding; the state is checkpointed with the rest. `augment`: each
  batch is randomly shifted and rotated (`udl_jax.augment`) before the loss, while P comes from the clean data.
  """
  name: str
  loss: Callable[[Batch], jax.Array]
  assign: Callable | None = None
  target: Callable[[jax.Array], jax.Array] | None = clustering.target_distribution
  needs_decoder: bool = False
  init_state: Callable[[np.ndarray, np.ndarray], Any] = lambda labels, centres: ()
  update: Callable | None = None
  augment: bool = False  # the loss sees randomly moved copies of each batch (DEC-DA); targets stay the clean ones


@dataclasses.dataclass(frozen=True)
class EmbeddingClusterer:
  """fit(z_fit, n_clusters, seed, n_init) -> predict(z) -> (labels, soft assignments or None).

  Runs on process 0 only (host code); `predict` serves the fit set and, under the holdout protocol, new rows.
  """
  name: str
  fit: Callable[[np.ndarray, int, int, int], Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]]


@dataclasses.dataclass(frozen=True)
class Seed:
  """What an `OwnTrainer` gets: the fit data, the seed's autoencoder, its k-means start and settings."""
  model: Any
  ae_params: Any
  x: np.ndarray
  y: np.ndarray | None
  n_clusters: int
  init: tuple[np.ndarray, np.ndarray]
  seed: int
  config: Any              # the method's resolved `cluster` block
  workdir: Any             # a folder of its own (checkpoints, metrics)
  mesh: Any


@dataclasses.dataclass(frozen=True)
class OwnTrainer:
  """run(seed: Seed) -> (labels, q or None, history: a list of dicts) for the fit rows; the rows' `seconds` sum to
  the trial's time (across resumes: a resumed history holds the earlier processes' rows)."""
  name: str
  run: Callable[[Seed], tuple[np.ndarray, np.ndarray | None, list[dict]]]


Method = FineTuner | EmbeddingClusterer | OwnTrainer

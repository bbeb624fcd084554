"""Default config blocks and per-dataset presets (DEC-keras's settings), shared by the files in configs/.

Blocks: `model` (architecture and its loss options), `train` (autoencoder optimisation), `cluster` (the DEC
loop). `validate` checks names and ranges before any work starts, so a typo fails in the first second.
"""

from __future__ import annotations

import ml_collections

from udl_jax import data, methods, models, train
from udl_jax.errors import UserError


def model_block(name: str = 'ae') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'name': name,                      # ae | sparse_ae | dae | vae
      'dims': (500, 500, 2000, 10),      # dense encoder widths after the input (DEC's d-500-500-2000-10)
      'activation': 'relu',
      'bottleneck_activation': 'linear',  # 'sigmoid' for the article's 10-unit sigmoid code
      'output_activation': 'linear',
      'kernel_init': 'lecun_normal',     # or 'dec': VarianceScaling(1/3, fan_in, uniform) as DEC-keras
      'sparsity_weight': 1e-4,           # sparse_ae: weight of the L1 activity penalty
      'sparsity_layers': 'all',          # sparse_ae: 'all' hidden layers or only the 'code'
      'noise_amount': 0.2,               # dae: share of pixels set to 0 or 1
      'features': (64, 32, 16),          # dae: conv widths
      'hidden': 500,                     # vae
      'latent': 10,                      # vae
  })


def train_block() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'epochs': 50,
      'batch_size': 256,
      'optimizer': 'adam',               # adam | sgd
      'learning_rate': 1e-3,
      'momentum': 0.9,                   # sgd only
      'val_fraction': 0.0,               # held out for validation loss and early stopping
      'patience': 0,                     # epochs without improvement before stopping; 0 = never stop early
      'checkpoint_every': 10,            # epochs
  })


def cluster_block() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'alpha': 1.0,                      # Student's t degrees of freedom
      'batch_size': 256,
      'optimizer': 'sgd',                # DEC: SGD(0.01, momentum 0.9)
      'learning_rate': 0.01,
      'momentum': 0.9,
      'update_interval': 140,            # steps between target updates (30 for small sets)
      'tol': 0.001,                      # stop when fewer than this share of labels changed
      'maxiter': 20000,
      'kmeans_n_init': 20,
      'checkpoint_every': 5,             # target updates
      'method_kwargs': {'idec': {'gamma': 0.1}},
      # Per-method values of the keys above. IDEC's reference code trains MNIST with Adam(1e-3): with DEC's
      # SGD(0.01) its KL term, weighted by gamma = 0.1, barely moves the clusters from their k-means start.
      'method_overrides': {'idec': {'optimizer': 'adam', 'learning_rate': 1e-3}},
  })


def method_cluster_block(cluster: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """The `cluster` block as `method` uses it: `cluster.method_overrides[method]` applied to a copy."""
  resolved = ml_collections.ConfigDict(cluster.to_dict())
  overrides = cluster.get('method_overrides', {}).get(method, {})
  for key, value in overrides.items():
    _check(key in resolved and key not in ('method_kwargs', 'method_overrides'),
           f"cluster.method_overrides.{method}.{key} is not a key of the cluster block")
    resolved[key] = value
  return resolved


# What configs written before these cluster keys existed ran with (for comparing a saved run's settings).
LEGACY_CLUSTER_DEFAULTS = {'optimizer': 'sgd', 'method_overrides': {}}


def method_settings(cluster: dict, method: str) -> dict:
  """Everything that decides `method`'s clustering phase (its resolved cluster block and its hyperparameters),
  as a plain dict: two runs whose settings are equal give the same trials from the same autoencoder."""
  resolved = method_cluster_block(ml_collections.ConfigDict(cluster), method).to_dict()
  kwargs = resolved.pop('method_kwargs', {}).get(method, {})
  resolved.pop('method_overrides', None)
  resolved.pop('checkpoint_every', None)  # when to save does not change the result
  return {**resolved, 'hyperparameters': kwargs}


# DEC-keras's settings: 300 pretraining epochs with SGD(lr=1, momentum=0.9) and VarianceScaling init for
# MNIST-like sets, 50 for USPS; update interval 140 for 70k sets, 30 for small ones.
PRESETS = {
    'digits': {'pretrain_epochs': 200, 'update_interval': 30, 'optimizer': 'adam', 'learning_rate': 1e-3},
    'mnist': {'pretrain_epochs': 300, 'update_interval': 140, 'optimizer': 'sgd', 'learning_rate': 1.0},
    'mnist_test': {'pretrain_epochs': 300, 'update_interval': 30, 'optimizer': 'sgd', 'learning_rate': 1.0},
    'fashion_mnist': {'pretrain_epochs': 300, 'update_interval': 140, 'optimizer': 'sgd', 'learning_rate': 1.0},
    'fashion_mnist_test': {'pretrain_epochs': 300, 'update_interval': 30, 'optimizer': 'sgd',
                           'learning_rate': 1.0},
    'usps': {'pretrain_epochs': 50, 'update_interval': 30, 'optimizer': 'adam', 'learning_rate': 1e-3},
    'folder': {'pretrain_epochs': 100, 'update_interval': 30, 'optimizer': 'adam', 'learning_rate': 1e-3},
}


def apply_preset(config: ml_collections.ConfigDict, dataset: str) -> None:
  if dataset not in PRESETS:
    raise UserError(f"unknown dataset '{dataset}'; valid names: {', '.join(PRESETS)}")
  preset = PRESETS[dataset]
  config.dataset = dataset
  config.pretrain.epochs = preset['pretrain_epochs']
  config.pretrain.optimizer = preset['optimizer']
  config.pretrain.learning_rate = preset['learning_rate']
  config.model.kernel_init = 'dec' if preset['optimizer'] == 'sgd' else 'lecun_normal'
  config.cluster.update_interval = preset['update_interval']


def parse_arg(arg: str | None) -> dict[str, str]:
  """'dataset=mnist,model=dae' -> {'dataset': 'mnist', 'model': 'dae'} (the `--config=file.py:ARG` part)."""
  out = {}
  for item in filter(None, (arg or '').split(',')):
    if '=' not in item:
      raise UserError(f"config argument '{item}' must look like key=value (e.g. dataset=mnist)")
    key, value = item.split('=', 1)
    out[key.strip()] = value.strip()
  return out


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise UserError(f'config: {message}')


def _check_optimizer(label: str, block) -> None:
  _check(block.learning_rate > 0, f'{label}.learning_rate must be > 0')
  _check(block.optimizer in train.OPTIMIZERS,
         f"{label}.optimizer must be one of {', '.join(train.OPTIMIZERS)}, got '{block.optimizer}'")


def validate(config: ml_collections.ConfigDict) -> None:
  """Names and ranges that would otherwise fail deep inside JAX, checked up front."""
  _check(config.dataset in data.NAMES, f"unknown dataset '{config.dataset}'; valid: {', '.join(data.NAMES)}")
  _check(config.dataset != 'folder' or bool(config.data_dir), 'dataset=folder needs --config.data_dir=FOLDER')
  _check(config.model.name in models.MODEL_NAMES,
         f"unknown model '{config.model.name}'; valid: {', '.join(models.MODEL_NAMES)}")
  for block in ('pretrain', 'train'):
    if block in config:
      b = config[block]
      _check(b.epochs >= 1, f'{block}.epochs must be >= 1, got {b.epochs}')
      _check(b.batch_size >= 1, f'{block}.batch_size must be >= 1, got {b.batch_size}')
      _check_optimizer(block, b)
      _check(0 <= b.val_fraction < 1, f'{block}.val_fraction must be in [0, 1)')
  if 'cluster' in config:
    c = config.cluster
    _check(c.update_interval >= 1 and c.maxiter >= 1 and c.batch_size >= 1,
           'cluster.update_interval, maxiter and batch_size must be >= 1')
    _check(c.alpha > 0, 'cluster.alpha must be > 0')
    _check_optimizer('cluster', c)
    for name in c.get('method_overrides', {}):
      _check_optimizer(f'cluster.method_overrides.{name}', method_cluster_block(c, name))
  if 'methods' in config:
    known = ('kmeans', 'ae_kmeans') + methods.names()
    for m in _as_list(config.methods):
      _check(m in known, f"unknown method '{m}'; valid: {', '.join(known)}")
  if 'protocol' in config:
    _check(config.protocol in ('transductive', 'holdout'),
           f"protocol must be transductive or holdout, got '{config.protocol}'")
    _check(0 < config.holdout_fraction < 1, 'holdout_fraction must be in (0, 1)')
  _check(config.dtype in ('float32', 'bfloat16'), f"dtype must be float32 or bfloat16, got '{config.dtype}'")


def _as_list(value) -> list[str]:
  return [v.strip() for v in value.split(',')] if isinstance(value, str) else list(value)


def method_list(config) -> list[str]:
  return _as_list(config.methods)

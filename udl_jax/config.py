"""Default config blocks and per-dataset presets (DEC-keras's settings), shared by the files in configs/.

Blocks: `model` (architecture and its loss options), `train` (autoencoder optimisation), `cluster` (the DEC
loop). `validate` checks names and ranges before any work starts, so a typo fails in the first second.
"""

from __future__ import annotations

import ml_collections

from udl_jax import data, losses, methods, models, parallel, train
from udl_jax.errors import UserError


def model_block(name: str = 'ae') -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'name': name,                      # ae | sparse_ae | dae | conv_ae | vae
      'dims': (500, 500, 2000, 10),      # dense encoder widths after the input (DEC's d-500-500-2000-10)
      'activation': 'relu',
      'bottleneck_activation': 'linear',  # 'sigmoid' for the article's 10-unit sigmoid code
      'output_activation': 'linear',
      'reconstruction': 'mse',           # or 'bernoulli': binary cross-entropy of a sigmoid output (VaDE's MNIST AE)
      'kernel_init': 'lecun_normal',     # or 'dec': VarianceScaling(1/3, fan_in, uniform), or 'glorot_uniform'
      'sparsity_weight': 1e-4,           # sparse_ae: weight of the L1 activity penalty
      'sparsity_layers': 'all',          # sparse_ae: 'all' hidden layers or only the 'code'
      'noise_amount': 0.2,               # dae: share of pixels set to 0 or 1
      'features': (64, 32, 16),          # dae: conv widths
      'conv_features': (32, 64, 128),    # conv_ae (DCEC): conv widths; its embedding is dims[-1] wide
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
      'augment': False,                  # train on randomly shifted (<= 10%) and rotated (<= 10 deg) copies (DEC-DA)
      'partial_batch': False,            # also a step on each epoch's last partial batch, as Keras' fit does
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
      'batch_order': 'shuffled',         # or 'in_order': DEC-keras's walk through the data (see udl_jax/dec.py)
      # Hyperparameters of each method (every built-in one listed, so that --config.cluster.method_kwargs.M.K works).
      'method_kwargs': {'idec': {'gamma': 0.1}, 'idec_da': {'gamma': 0.1}, 'dcec': {'gamma': 0.1},
                        'dcn': {'weight': 0.05},
                        'dkm': {'weight': 1.0, 'annealing': False},
                        'n2d': {'n_neighbors': 20, 'min_dist': 0.0, 'gmm_n_init': 0},  # 0: kmeans_n_init
                        'vade': {'epochs': 300, 'batch_size': 100, 'learning_rate': 0.002, 'decay': 0.9,
                                 'decay_every': 10, 'min_learning_rate': 0.0002, 'likelihood': 'gaussian'}},
      # Per-method values of the keys above. IDEC's reference code trains MNIST with Adam(1e-3): with DEC's
      # SGD(0.01) its KL term, weighted by gamma = 0.1, barely moves the clusters from their k-means start.
      # DCN and DKM: Adam(1e-4), ClustPy's clustering optimiser for both. (DKM's authors fine-tune with Adam
      # 1e-3 after an Adam-pretrained autoencoder; from DEC-keras's SGD-pretrained MNIST autoencoders 1e-3 collapsed
      # every point into one cluster within 30 steps, NMI 0.62 -> 0.00 on mnist_test seed 0; 1e-4 gave 0.645.)
      # dec_da / idec_da: as DEC-DA's experiment script (XifengGuo/DEC-DA, run_exp.py) trains its dense models:
      # FcDEC-DA with DEC's SGD(0.01, 0.9), FcIDEC-DA with SGD(1.0, 0.9) on 0.1 KL + MSE.
      # DCEC: Adam(1e-3), as its reference code (XifengGuo/DCEC) compiles it.
      'method_overrides': {'idec': {'optimizer': 'adam', 'learning_rate': 1e-3},
                           'dcec': {'optimizer': 'adam', 'learning_rate': 1e-3},
                           'idec_da': {'optimizer': 'sgd', 'learning_rate': 1.0},
                           'dcn': {'optimizer': 'adam', 'learning_rate': 1e-4},
                           'dkm': {'optimizer': 'adam', 'learning_rate': 1e-4}},
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


# Keys added after runs were saved: a saved config without one ran with this value (dotted names).
ADDED_DEFAULTS = {'pretrain.augment': False, 'train.augment': False, 'pretrain.partial_batch': False,
                  'train.partial_batch': False, 'cluster.batch_order': 'shuffled', 'reference': '',
                  'model.conv_features': [32, 64, 128], 'model.reconstruction': 'mse',
                  'cluster.method_kwargs.n2d.gmm_n_init': 0}

# What configs written before these cluster keys existed ran with (for comparing a saved run's settings).
LEGACY_CLUSTER_DEFAULTS = {'optimizer': 'sgd', 'method_overrides': {}}


def method_kwargs(cluster, method: str) -> dict:
  """The hyperparameters of `method` (`cluster.method_kwargs[method]`), as a plain dict."""
  return dict(cluster.get('method_kwargs', {}).get(method, {}))


def method_settings(cluster: dict, method: str) -> dict:
  """Everything that decides `method`'s clustering phase (its resolved cluster block and its hyperparameters),
  as a plain dict: two runs whose settings are equal give the same trials from the same autoencoder. An
  embedding clusterer uses only k-means' n_init (as its own n_init) of the block."""
  resolved = method_cluster_block(ml_collections.ConfigDict(cluster), method).to_dict()
  kwargs = {k: v for k, v in resolved.pop('method_kwargs', {}).get(method, {}).items()
            if v != ADDED_DEFAULTS.get(f'cluster.method_kwargs.{method}.{k}', ...)}  # added later, at its old value
  if method in methods.names() and isinstance(methods.get(method, **kwargs), methods.EmbeddingClusterer):
    return {'kmeans_n_init': resolved['kmeans_n_init'], 'hyperparameters': kwargs}
  resolved.pop('method_overrides', None)
  resolved.pop('checkpoint_every', None)  # when to save does not change the result
  for key in [k for k in resolved if resolved[k] == ADDED_DEFAULTS.get(f'cluster.{k}', ...)]:
    del resolved[key]  # a key added later, at the value trials recorded before it ran with
  return {**resolved, 'hyperparameters': kwargs}


# DEC-keras's settings: 300 pretraining epochs with SGD(lr=1, momentum=0.9) and VarianceScaling init for
# MNIST-like sets, 50 for USPS; update interval 140 for 70k sets, 30 for small ones.
PRESETS = {
    # (digits: an epoch takes a fifth of a second on a CPU; a checkpoint every 50 keeps saving from taking
    # a tenth of the pretraining time)
    'digits': {'pretrain_epochs': 200, 'update_interval': 30, 'optimizer': 'adam', 'learning_rate': 1e-3,
               'checkpoint_every': 50},
    'mnist': {'pretrain_epochs': 300, 'update_interval': 140, 'optimizer': 'sgd', 'learning_rate': 1.0},
    'mnist_test': {'pretrain_epochs': 300, 'update_interval': 30, 'optimizer': 'sgd', 'learning_rate': 1.0},
    'fashion_mnist': {'pretrain_epochs': 300, 'update_interval': 140, 'optimizer': 'sgd', 'learning_rate': 1.0},
    'fashion_mnist_test': {'pretrain_epochs': 300, 'update_interval': 30, 'optimizer': 'sgd',
                           'learning_rate': 1.0},
    'usps': {'pretrain_epochs': 50, 'update_interval': 30, 'optimizer': 'adam', 'learning_rate': 1e-3},
    'folder': {'pretrain_epochs': 100, 'update_interval': 30, 'optimizer': 'adam', 'learning_rate': 1e-3},
}


KEEP_CHECKPOINTS = ('keep', 'last', 'none')
BATCH_ORDERS = ('shuffled', 'in_order')


# Reference codes whose every number-changing detail a run can follow (`reference=NAME`): the code's name, and
# what it changes beyond Keras' loops (which all of them share): its pretraining over the dataset's preset, its
# model, its pretraining's other settings, its methods' hyperparameters, and the methods it reports.
REFERENCES = {
    'dec_keras': {'name': 'DEC-keras'},
    'dcec': {'name': 'DCEC',
             'preset': {'pretrain_epochs': 200, 'optimizer': 'adam', 'learning_rate': 1e-3, 'update_interval': 140},
             'model': {'name': 'conv_ae'}, 'methods': 'kmeans,ae_kmeans,dcec'},
    'vade': {'name': 'VaDE', 'preset': {'optimizer': 'adam', 'learning_rate': 1e-3},
             'model': {'name': 'ae', 'output_activation': 'sigmoid', 'reconstruction': 'bernoulli'},
             'method_kwargs': {'vade': {'likelihood': 'bernoulli', 'epochs': 3000}},
             'methods': 'kmeans,ae_kmeans,ae_gmm,vade'},
    'n2d': {'name': 'N2D', 'preset': {'pretrain_epochs': 1000, 'optimizer': 'adam', 'learning_rate': 1e-3},
            'method_kwargs': {'n2d': {'gmm_n_init': 1}}, 'methods': 'kmeans,ae_kmeans,ae_gmm,n2d'},
    'dec_da': {'name': 'DEC-DA', 'preset': {'pretrain_epochs': 500, 'optimizer': 'sgd', 'learning_rate': 1.0},
               'pretrain': {'augment': True, 'partial_batch': False},
               'methods': 'kmeans,ae_kmeans,dec_da,idec_da'},
}


def apply_preset(config: ml_collections.ConfigDict, dataset: str, reference: str = '') -> None:
  """The dataset's preset; with a reference, every detail in which that code differs from udl_jax's defaults
  and that can change a number (its reference mode; `REFERENCES`).

  Every reference code trains with Keras' fit and walks its data in order, so each reference mode has:
    - kernel init: glorot_uniform (Keras' default) with Adam, here lecun_normal (SGD keeps DEC's VarianceScaling);
    - pretraining: a step on each epoch's last partial batch too (Keras' fit), here dropped;
    - DEC-style loops: batches walk the data in its own order with a partial last batch, here a seeded permutation.
  reference='dec_keras' (DEC-keras, XifengGuo/DEC-keras): nothing more.
  reference='dcec' (DCEC, XifengGuo/DCEC): its convolutional autoencoder (conv_ae) pretrained 200 epochs with
  Adam(1e-3) on every dataset, target updates every 140 steps, and the methods kmeans, ae_kmeans (CAE + KMeans)
  and dcec.
  reference='vade' (VaDE, slim1017/VaDE): its MNIST recipe. DEC's dense network with a sigmoid output on binary
  cross-entropy, and VaDE with the Bernoulli likelihood for 3000 epochs; the methods kmeans, ae_kmeans, ae_gmm
  (full covariances; VaDE starts from one diagonal GMM fit, epoch 0 of its history) and vade. Its pretraining
  code was never published (it ships weights): here the dataset's preset epochs with Adam(1e-3).
  reference='n2d' (N2D, rymc/n2d): DEC's dense network pretrained 1000 epochs with Adam(1e-3), batch 256; the
  methods kmeans, ae_kmeans, ae_gmm and n2d (UMAP to n_clusters dimensions, 20 neighbours, min_dist 0: the n2d
  method's defaults; then one GMM fit, as its code does, where the harness keeps the likeliest of k-means' n_init).
  reference='dec_da' (DEC-DA, XifengGuo/DEC-DA: run_exp.py's dense models): DEC's network with its
  VarianceScaling init, pretrained 500 epochs with SGD(1, 0.9) on augmented batches on every dataset, floor(n/256)
  full batches an epoch (its fit_generator's steps_per_epoch, so no partial batch), then the methods kmeans,
  ae_kmeans, dec_da (SGD 0.01) and idec_da (SGD 1.0) in DEC-keras's loop; target updates every 140 steps on the
  70k sets and every 30 on the others, as the dataset presets have it.
  """
  if dataset not in PRESETS:
    raise UserError(f"unknown dataset '{dataset}'; valid names: {', '.join(PRESETS)}")
  if reference and reference not in REFERENCES:
    raise UserError(f"unknown reference '{reference}'; valid: {', '.join(REFERENCES)} (or none)")
  recipe = REFERENCES.get(reference, {})
  preset = {**PRESETS[dataset], **recipe.get('preset', {})}
  keras = bool(reference)
  config.dataset = dataset
  config.reference = reference
  config.pretrain.epochs = preset['pretrain_epochs']
  config.pretrain.optimizer = preset['optimizer']
  config.pretrain.learning_rate = preset['learning_rate']
  config.pretrain.checkpoint_every = preset.get('checkpoint_every', train_block().checkpoint_every)
  adam_init = 'glorot_uniform' if keras else 'lecun_normal'
  config.model.kernel_init = 'dec' if preset['optimizer'] == 'sgd' else adam_init
  config.pretrain.partial_batch = keras
  config.cluster.update_interval = preset['update_interval']
  config.cluster.batch_order = 'in_order' if keras else 'shuffled'
  config.pretrain.update(recipe.get('pretrain', {}))
  config.model.update(recipe.get('model', {}))
  for method, kwargs in recipe.get('method_kwargs', {}).items():
    config.cluster.method_kwargs[method].update(kwargs)
  if 'methods' in recipe and 'methods' in config:
    config.methods = recipe['methods']


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
  """Names, ranges and combinations that would otherwise fail deep inside JAX or scikit-learn, checked before
  any work starts (the data-dependent ones are in `validate_for_data`)."""
  _check(config.dataset in data.NAMES, f"unknown dataset '{config.dataset}'; valid: {', '.join(data.NAMES)}")
  _check(config.dataset != 'folder' or bool(config.data_dir), 'dataset=folder needs --config.data_dir=FOLDER')
  _check(config.image_size >= 2, f'image_size must be >= 2, got {config.image_size}')
  _check(config.model.name in models.MODEL_NAMES,
         f"unknown model '{config.model.name}'; valid: {', '.join(models.MODEL_NAMES)}")
  _check(config.model.kernel_init in models.KERNEL_INITS,
         f"unknown model.kernel_init '{config.model.kernel_init}'; valid: {', '.join(models.KERNEL_INITS)}")
  reconstruction = config.model.get('reconstruction', 'mse')
  _check(reconstruction in losses.RECONSTRUCTIONS,
         f"model.reconstruction must be one of {', '.join(losses.RECONSTRUCTIONS)}, got '{reconstruction}'")
  _check(reconstruction == 'mse' or (config.model.name in ('ae', 'sparse_ae')
                                     and config.model.output_activation == 'sigmoid'),
         "model.reconstruction=bernoulli reads the logits of a dense autoencoder's sigmoid output: use model.name=ae "
         '(or sparse_ae) with --config.model.output_activation=sigmoid')
  for block in ('pretrain', 'train'):
    if block in config:
      b = config[block]
      _check(b.epochs >= 1, f'{block}.epochs must be >= 1, got {b.epochs}')
      _check(b.batch_size >= 1, f'{block}.batch_size must be >= 1, got {b.batch_size}')
      _check(b.checkpoint_every >= 1, f'{block}.checkpoint_every must be >= 1 (epochs), got {b.checkpoint_every}')
      _check(b.patience >= 0, f'{block}.patience must be >= 0, got {b.patience}')
      _check_optimizer(block, b)
      _check(0 <= b.val_fraction < 1, f'{block}.val_fraction must be in [0, 1)')
  if 'seeds' in config:
    _check(config.seeds >= 1, f'seeds must be >= 1, got {config.seeds}')
    _check(config.first_seed >= 0, f'first_seed must be >= 0, got {config.first_seed}')
  if 'seed_batch' in config:
    _check(config.seed_batch >= 0, f'seed_batch must be >= 0 (0: automatic), got {config.seed_batch}')
  if 'n_clusters' in config:
    _check(config.n_clusters == 0 or config.n_clusters >= 2,
           f'n_clusters must be >= 2 (or 0: the number of classes of the dataset), got {config.n_clusters}')
  if 'cluster' in config:
    c = config.cluster
    _check(c.kmeans_n_init >= 1, f'cluster.kmeans_n_init must be >= 1, got {c.kmeans_n_init}')
    gmm_n_init = method_kwargs(c, 'n2d').get('gmm_n_init', 0)
    _check(gmm_n_init >= 0, f'cluster.method_kwargs.n2d.gmm_n_init must be >= 0 (0: kmeans_n_init), got {gmm_n_init}')
    for name in ('',) + tuple(c.get('method_overrides', {})):
      label = f'cluster.method_overrides.{name}' if name else 'cluster'
      b = method_cluster_block(c, name) if name else c
      _check(b.update_interval >= 1 and b.maxiter >= 1 and b.batch_size >= 1,
             f'{label}: update_interval, maxiter and batch_size must be >= 1')
      _check(b.checkpoint_every >= 1, f'{label}.checkpoint_every must be >= 1 (target updates)')
      _check(b.alpha > 0, f'{label}.alpha must be > 0')
      _check(0 <= b.tol < 1, f'{label}.tol must be in [0, 1)')
      _check(b.get('batch_order', 'shuffled') in BATCH_ORDERS,
             f"{label}.batch_order must be one of {', '.join(BATCH_ORDERS)}, got '{b.get('batch_order')}'")
      _check_optimizer(label, b)
  if 'methods' in config:
    known = methods.BASELINES + methods.names()
    for m in _as_list(config.methods):
      _check(m in known, f"unknown method '{m}'; valid: {', '.join(known)}")
      if m in methods.names():
        method = methods.get(m, **method_kwargs(config.cluster, m))
        _check(not (getattr(method, 'needs_decoder', False) and config.model.name == 'vae'),
               f"method '{m}' trains the decoder's reconstruction, which model vae does not have; use "
               'model.name=ae (or drop the method)')
        _check(not (m == 'vade' and method_kwargs(config.cluster, m).get('likelihood') == 'bernoulli'
                    and reconstruction != 'bernoulli'),
               "vade's Bernoulli likelihood reads the decoder's output as logits: pretrain the autoencoder for it "
               'with --config.model.reconstruction=bernoulli --config.model.output_activation=sigmoid')
        _check(m != 'dcec' or config.model.name == 'conv_ae',
               "method 'dcec' is IDEC on DCEC's convolutional autoencoder: add --config.model.name=conv_ae, or "
               'run the paper\'s recipe with reference=dcec (--config=configs/benchmark.py:dataset=NAME,reference=dcec)')
        _check(not (isinstance(method, methods.OwnTrainer) and config.get('protocol') == 'holdout'),
               f"method '{m}' trains its own model and cannot score held-out images; use protocol=transductive")
  if 'protocol' in config:
    _check(config.protocol in ('transductive', 'holdout'),
           f"protocol must be transductive or holdout, got '{config.protocol}'")
    _check(0 < config.holdout_fraction < 1, 'holdout_fraction must be in (0, 1)')
  _check(config.dtype in models.DTYPES, f"dtype must be one of {', '.join(models.DTYPES)}, got '{config.dtype}'")
  _check(config.get('keep_checkpoints', 'keep') in KEEP_CHECKPOINTS,
         f"keep_checkpoints must be one of {', '.join(KEEP_CHECKPOINTS)}, got '{config.get('keep_checkpoints')}'")


def _sample_counts(config, n: int) -> tuple[int, int]:
  """(samples to cluster, pretraining validation samples), as the run splits `n` images (holdout, then val)."""
  n_fit = n - int(round(n * config.holdout_fraction)) if config.get('protocol') == 'holdout' else n
  block = config['pretrain' if 'pretrain' in config else 'train']
  return n_fit, int(round(n_fit * block.val_fraction))


def fit_batch_sizes(config: ml_collections.ConfigDict, n: int, devices: int) -> list[str]:
  """An image folder may hold fewer images than a batch: its batch sizes are lowered to the largest multiple of
  the device count that fits (the other datasets keep the published sizes). Returns what was changed."""
  if config.get('dataset') != 'folder':
    return []
  n_fit, n_val = _sample_counts(config, n)
  blocks = [('pretrain' if 'pretrain' in config else 'train', n_fit - n_val)]
  if 'cluster' in config:
    blocks += [('cluster', n_fit)] + [(f'cluster.method_overrides.{m}', n_fit)
                                      for m, o in config.cluster.method_overrides.items() if 'batch_size' in o]
  changed = []
  for path, available in blocks:
    block = config
    for key in path.split('.'):
      block = block[key]
    fitted = available // devices * devices
    if block['batch_size'] > available and fitted >= devices:
      changed.append(f"{path}.batch_size {block['batch_size']} -> {fitted} (the folder has {available} images "
                     'for it)')
      block['batch_size'] = fitted
  return changed


def validate_for_data(config: ml_collections.ConfigDict, dataset: data.Dataset, mesh) -> None:
  """What depends on the loaded data and the devices: cluster count and batch sizes against sample counts.

  Mirrors how the run splits the data (holdout split, then the validation split), so that nothing fails after
  an earlier phase already ran.
  """
  n, devices = len(dataset), mesh.devices.size
  n_fit, n_val = _sample_counts(config, n)
  if 'n_clusters' in config:
    k = config.n_clusters or dataset.num_classes
    _check(bool(k), f'{dataset.name} has no labels: set --config.n_clusters to the number of clusters wanted')
    _check(k <= n_fit, f'n_clusters {k} is more than the {n_fit} samples to cluster')
  block_name = 'pretrain' if 'pretrain' in config else 'train'
  b = config[block_name]
  _check(b.batch_size <= n_fit - n_val, f'{block_name}.batch_size {b.batch_size} is larger than the '
         f'{n_fit - n_val} training samples; lower it')
  parallel.check_batch_size(b.batch_size, mesh, f'{block_name}.batch_size')
  _check(n_val == 0 or n_val >= devices, f'{block_name}.val_fraction leaves {n_val} validation samples, fewer '
         f'than the {devices} devices; raise it or set it to 0')
  if 'cluster' in config:
    for m in [m for m in method_list(config) if m in methods.names()]:
      size = method_cluster_block(config.cluster, m).batch_size
      _check(size <= n_fit, f'cluster batch_size {size} of {m} is larger than the {n_fit} samples to cluster')
      parallel.check_batch_size(size, mesh, f'cluster batch_size of {m}')


def _as_list(value) -> list[str]:
  return [v.strip() for v in value.split(',')] if isinstance(value, str) else list(value)


def method_list(config) -> list[str]:
  return _as_list(config.methods)

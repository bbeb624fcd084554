"""Train one autoencoder and draw its figures.

  python -m experiments.train_autoencoder --config=configs/autoencoder.py:model=dae,dataset=fashion_mnist --workdir=runs/dae

Argument keys: model=ae|sparse_ae|dae|conv_ae|vae, dataset=NAME. The article presets (sigmoid 10-unit code for the
dense models, Adam, 50 epochs, early stopping with patience 10 on a 10% validation split) are the defaults;
override anything with --config.KEY=VALUE.
"""

import ml_collections

from udl_jax import config as udl_config


ARGUMENTS = ('model', 'dataset')  # the keys after the colon; --config.model.name / --config.dataset are read so too


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = udl_config.parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.dataset = args.pop('dataset', 'fashion_mnist')
  c.data_dir = ''
  c.download = ml_collections.config_dict.placeholder(bool)  # TensorFlow Datasets download: None = when online
  c.image_size = 28
  c.labels_csv = ''
  c.seed = 0
  c.dtype = 'float32'
  c.distributed = False
  c.model = udl_config.model_block(args.pop('model', 'ae'))
  if c.model.name in ('ae', 'sparse_ae'):  # the article's dense autoencoders: a 10-number sigmoid code
    c.model.dims = (500, 500, 2000, 10)
    c.model.bottleneck_activation = 'sigmoid'
    c.model.output_activation = 'sigmoid'
  c.train = udl_config.train_block()
  c.train.val_fraction = 0.1
  c.train.patience = 10
  c.train.checkpoint_every = 5
  c.figures = True
  if args:
    raise udl_config.UserError(f'unknown config argument(s) {sorted(args)}; valid: model, dataset')
  return c

"""Benchmark: raw KMeans, AE+KMeans, DEC and IDEC over seeds, on one dataset, with DEC-keras's settings.

  python -m experiments.benchmark                                   # digits, 10 seeds, a few minutes on a CPU
  python -m experiments.benchmark --config=configs/benchmark.py:dataset=mnist --config.seeds=3 --workdir=runs/mnist
  python -m experiments.benchmark --config=configs/benchmark.py:dataset=folder \
      --config.data_dir=PHOTOS --config.n_clusters=8 --workdir=runs/photos

Argument keys (after the colon): dataset=NAME (digits, mnist, mnist_test, fashion_mnist, fashion_mnist_test,
usps, folder); --config.dataset=NAME applies the same preset. reference=dec_keras (or --config.reference=dec_keras):
DEC-keras's reference mode, every detail of its code that can change a number (udl_jax/config.py, `apply_preset`);
reference=dcec: DCEC's recipe (its convolutional autoencoder, Adam pretraining, the dcec method). reference=vade:
VaDE's MNIST recipe (a sigmoid output pretrained on binary cross-entropy, VaDE with the Bernoulli likelihood).
reference=n2d: N2D's recipe (1000 epochs of Adam on DEC's dense network, then UMAP + GMM). reference=dec_da:
DEC-DA's dense recipe (500 augmented SGD epochs, then DEC-DA and IDEC-DA).
Everything else is a flag: --config.KEY=VALUE (a typo fails: the config is locked). --print_config shows the resolved
config and the planned trials.
"""

import ml_collections

from udl_jax import config as udl_config


ARGUMENTS = ('dataset', 'reference')  # the keys after the colon; --config.dataset=NAME is read as dataset=NAME here


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = udl_config.parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.dataset = 'digits'
  c.reference = ''            # 'dec_keras' | 'dcec' | 'vade' | 'n2d' | 'dec_da': follow that code where it differs
  c.data_dir = ''             # '' = $UDL_DATA_DIR, then system paths, then TensorFlow Datasets
  c.download = ml_collections.config_dict.placeholder(bool)  # TensorFlow Datasets download: None = when online
  c.image_size = 28           # folder datasets: images are resized to this square
  c.labels_csv = ''           # folder datasets: optional filename,label CSV
  c.n_clusters = 0            # 0 = the number of classes of the dataset
  c.seeds = 10                # seeds 0 .. seeds-1 (or first_seed .. first_seed+seeds-1)
  c.first_seed = 0
  c.methods = 'kmeans,ae_kmeans,dec,idec'
  c.imports = ''               # modules that register extra clustering methods, e.g. 'my_losses'
  c.protocol = 'transductive'  # or 'holdout': fit on a train split, score the held-out images
  c.holdout_fraction = 0.3
  c.dtype = 'float32'          # or 'bfloat16': mixed precision (float32 params and optimiser state)
  c.distributed = False        # multi-host: call jax.distributed.initialize() first
  c.tensorboard = False        # also write TensorBoard scalars of every phase (pip install -e ".[tensorboard]")
  c.seed_batch = 0             # seeds trained as one program (vmap); 0: a process's seeds on a GPU/TPU, 1 on a CPU
  c.keep_checkpoints = 'none'  # after a phase finished: 'keep' (orbax's last two steps), 'last' step, or 'none'
  c.model = udl_config.model_block('ae')
  c.pretrain = udl_config.train_block()
  c.cluster = udl_config.cluster_block()
  udl_config.apply_preset(c, args.pop('dataset', 'digits'), args.pop('reference', ''))
  if args:
    raise udl_config.UserError(f'unknown config argument(s) {sorted(args)}; valid: dataset, reference')
  return c

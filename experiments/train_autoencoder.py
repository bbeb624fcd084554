"""Train one autoencoder (ae, sparse_ae, dae, vae) and draw its figures.

  python -m experiments.train_autoencoder --config=configs/autoencoder.py:model=dae,dataset=fashion_mnist --workdir=runs/dae

Re-running the same command in the same workdir resumes. See configs/autoencoder.py for every option.
"""

from absl import flags

from experiments import launch
from udl_jax import autoencoder, data

_CONFIG = launch.define_config('configs/autoencoder.py', 'Autoencoder config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (default: runs/<model>_<dataset>).')


def main(argv):
  launch.check_no_positional(argv)
  config = launch.resolved_config(_CONFIG)
  if launch.PRINT_CONFIG.value:
    launch.print_config(config)
    return
  data.locate_from_config(config)  # missing data fails here, before the workdir exists
  workdir = launch.prepare_workdir(_WORKDIR.value or f'runs/{config.model.name}_{config.dataset}', config.distributed)
  summary = autoencoder.run(config, workdir)
  print({k: v for k, v in summary.items() if k in ('model', 'dataset', 'epochs_run', 'heldout')})


if __name__ == '__main__':
  launch.run(main)

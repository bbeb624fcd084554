"""What on-device augmentation (`--config.pretrain.augment`, DEC-DA's shifts and rotations) costs in pretraining.

  python -m benchmarks.augment                      # MNIST-shaped dense AE, batch 256, float32
  python -m benchmarks.augment --batch=1024 --repeats=3

Times the library's pretraining epoch (`train.make_train_epoch`, as `benchmarks.throughput` does) with and
without `augment.augmented_loss`, on random data already on the device, one after the other in one process;
writes OUT/augment.json and prints samples/s of both and the ratio.
"""

from __future__ import annotations

import datetime
import shlex
import statistics
import sys
from pathlib import Path

from absl import app, flags

from benchmarks import throughput
from udl_jax import config as udl_config, log, parallel, results

_BATCH = flags.DEFINE_integer('batch', 256, 'Batch size.')
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 30, 'Batches per timed epoch.')
_REPEATS_AUG = flags.DEFINE_integer('times', 5, 'Timed repeats per measurement (the median is reported).')
_OUT_AUG = flags.DEFINE_string('dest', 'benchmarks/results', 'Folder for augment.json.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  mesh, batch, n = parallel.make_mesh(), _BATCH.value, _NUM_BATCHES.value
  model_cfg = udl_config.model_block('ae')
  rows = {}
  for augmented in (False, True):
    seconds = throughput.autoencoder_seconds('ae', model_cfg, batch, 'float32', n, mesh, _REPEATS_AUG.value,
                                             augmented=augmented)
    rows['augmented' if augmented else 'clean'] = {'seconds': seconds,
                                                   'samples_per_s': n * batch / statistics.median(seconds)}
  ratio = rows['augmented']['samples_per_s'] / rows['clean']['samples_per_s']
  report = {'command': shlex.join(['python', '-m', 'benchmarks.augment'] + sys.argv[1:]),
            'date': datetime.datetime.now().isoformat(timespec='seconds'), 'machine': throughput.machine(),
            'batch': batch, 'batches': n, 'rows': rows, 'augmented_over_clean': ratio}
  results.write_json(Path(_OUT_AUG.value) / 'augment.json', report)
  log.info('dense AE pretraining, batch %d: clean %.0f samples/s, augmented %.0f samples/s (x%.3f)', batch,
           rows['clean']['samples_per_s'], rows['augmented']['samples_per_s'], ratio)


if __name__ == '__main__':
  app.run(main)

"""What computing conv_ae's transposed convolutions by phases (`models.PhaseConvTranspose`) gains over Flax's
`nn.ConvTranspose` (an input-dilated convolution), in DCEC's pretraining step.

  python -m benchmarks.conv_transpose                 # 28x28 (MNIST) and 8x8 (digits), batch 256, float32

Times the library's pretraining epoch (`train.make_train_epoch`, looped on a CPU as `train.fit` runs it) of
conv_ae with each implementation (same parameters, same outputs), one after the other in one process, on random
data already on the device; writes DEST/conv_transpose.json and prints samples/s of both and the ratio.
"""

from __future__ import annotations

import datetime
import shlex
import statistics
import sys
from pathlib import Path

import flax.linen as nn
import jax
from absl import app, flags

from benchmarks import throughput
from udl_jax import config as udl_config, losses, models, parallel, results, train

_SIDES = flags.DEFINE_list('sides', ['28', '8'], 'Image sides to time.')
_BATCH = flags.DEFINE_integer('batch', 256, 'Batch size.')
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 5, 'Batches per timed epoch.')
_TIMES = flags.DEFINE_integer('times', 3, 'Timed repeats per measurement (the median is reported).')
_DEST = flags.DEFINE_string('dest', 'benchmarks/results', 'Folder for conv_transpose.json.')


class FlaxConvTranspose(nn.Module):
  """nn.ConvTranspose behind `PhaseConvTranspose`'s constructor (what conv_ae used before)."""
  features: int
  kernel_size: int
  padding: str = 'SAME'
  kernel_init: object = nn.initializers.lecun_normal()
  dtype: object = None
  param_dtype: object = None

  @nn.compact
  def __call__(self, x):
    return nn.ConvTranspose(self.features, (self.kernel_size,) * 2, (2, 2), padding=self.padding,
                            kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=self.param_dtype)(x)


def epoch_seconds(side: int, transposed_conv, batch: int, num_batches: int, mesh, repeats: int) -> list[float]:
  model_cfg = udl_config.model_block('conv_ae')
  model = models.ConvEmbeddingAE(side=side, transposed_conv=transposed_conv)
  x = parallel.replicate(jax.random.uniform(jax.random.key(0), (num_batches * batch, side, side, 1)), mesh)
  opt_cfg = udl_config.train_block()
  opt_cfg.update(optimizer='adam', learning_rate=1e-3)
  state = parallel.replicate(train.init_state(model, x[:1], train.make_optimizer(opt_cfg), jax.random.key(1)), mesh)
  epoch = train.make_train_epoch(losses.make_loss_fn('conv_ae', model, model_cfg), batch, mesh,
                                 scan=train.epoch_as_scan(model))
  return throughput.timed(throughput.threaded(lambda s: epoch(s, x, jax.random.key(2)), state), repeats)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  mesh, batch, n = parallel.make_mesh(), _BATCH.value, _NUM_BATCHES.value
  rows = {}
  for side in map(int, _SIDES.value):
    row = {}
    for name, module in (('flax', FlaxConvTranspose), ('phases', models.PhaseConvTranspose)):
      seconds = epoch_seconds(side, module, batch, n, mesh, _TIMES.value)
      row[name] = {'seconds': seconds, 'samples_per_s': n * batch / statistics.median(seconds)}
    row['phases_over_flax'] = row['phases']['samples_per_s'] / row['flax']['samples_per_s']
    rows[str(side)] = row
    print(f"conv_ae {side}x{side} pretraining, batch {batch}: nn.ConvTranspose {row['flax']['samples_per_s']:.0f} "
          f"samples/s, by phases {row['phases']['samples_per_s']:.0f} samples/s (x{row['phases_over_flax']:.2f})",
          flush=True)
  report = {'command': shlex.join(['python', '-m', 'benchmarks.conv_transpose'] + sys.argv[1:]),
            'date': datetime.datetime.now().isoformat(timespec='seconds'), 'machine': throughput.machine(),
            'batch': batch, 'batches': n, 'rows': rows}
  results.write_json(Path(_DEST.value) / 'conv_transpose.json', report)


if __name__ == '__main__':
  app.run(main)

"""Training throughput of udl_jax on the current backend, against analytic FLOPs, matmul ceilings and peers.

  python -m benchmarks.throughput                                   # batches 256,1024,2048; float32,bfloat16
  python -m benchmarks.throughput --batch_sizes=256 --repeats=2     # a quick check
  python -m benchmarks.throughput --peers= --dtype=float32          # no peers, float32 only

Writes OUT/throughput.json (every measurement, the machine, the command) and OUT/throughput.md (the table).
Every workload runs the library's own jitted functions (`train.make_train_epoch`, `dec.make_train_chunk`,
`dec.make_predict`) on random data already on the device, so the numbers are those of a real run minus the
data loading. What is measured and why is explained in benchmarks/README.md.
"""

from __future__ import annotations

import collections
import datetime
import functools
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax.training import train_state

from benchmarks import peers
from udl_jax import (augment, config as udl_config, dec, log, losses, methods, metrics, models, parallel, results,
                     train)
from udl_jax.errors import UserError

_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['256', '1024', '2048'], 'Batch sizes of the dense AE and DEC.')
_DTYPES = flags.DEFINE_list('dtype', ['float32', 'bfloat16'], 'Compute dtypes of the dense AE and DEC.')
_PEERS = flags.DEFINE_list('peers', ['torch', 'keras'], f'Peers to compare with when importable: {peers.NAMES}.')
_WORKLOADS = flags.DEFINE_list('workloads', ['ae', 'dae', 'vae', 'dec'], 'Workloads to run (see LABELS).')
_OUT = flags.DEFINE_string('out', 'benchmarks/results', 'Folder for throughput.json and throughput.md.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats per measurement (the median is reported).')
_BATCHES = flags.DEFINE_integer('batches', 30, 'Batches per timed AE and VAE epoch (and per peer epoch).')
_CONV_BATCHES = flags.DEFINE_integer('conv_batches', 2, 'Batches per timed conv-DAE epoch (slow on CPU).')
_DEC_STEPS = flags.DEFINE_integer('dec_steps', 140, 'DEC steps per timed chunk (one update interval).')
_DEC_SAMPLES = flags.DEFINE_integer('dec_samples', 70_000, 'Samples the DEC target and Q are computed on.')

IMAGE_SHAPE = (28, 28, 1)
INPUT_DIM = 784
SMALL_BATCH = 256            # the conv DAE and the VAE run at this batch size only (convolutions are slow on CPU)
LEARNING_RATE = 0.01         # throughput does not depend on it; small enough that random data stays finite
N_CLUSTERS = 10
WARMUP = 1                   # untimed calls before timing: compilation, allocator and thread-pool warm-up
GEMM_MIN_SECONDS = 0.05      # each timed ceiling call loops one matmul for at least this long
SQUARE = 2048
LABELS = {'ae': 'AE pretrain', 'dae': 'conv DAE pretrain', 'vae': 'VAE pretrain', 'dec': 'DEC clustering'}


# ---------------------------------------------------------------------------------------------- timing

def timed(fn, repeats: int, warmup: int = WARMUP) -> list[float]:
  """Seconds of `repeats` calls of fn(), after `warmup` untimed calls; each call waits for its results.

  The one timing loop of this file: JAX dispatches asynchronously, so without `block_until_ready` we would
  time the dispatch, not the work; the warm-up keeps compilation out. Callers report the median, which one
  slow repeat (another process waking up) does not move.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn())
  seconds = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    seconds.append(time.perf_counter() - t0)
  return seconds


def threaded(step, state):
  """A zero-argument callable for `timed` that hands each call the state the previous call returned.

  The library's jitted epochs and chunks donate their state buffer, so a state can be used only once.
  """
  box = [state]

  def call():
    box[0], out = step(box[0])
    return box[0], out

  return call


# ---------------------------------------------------------------------------------------------- FLOPs

def dense_layers(workload: str, model_cfg) -> list[tuple[int, int]] | None:
  """(in, out) of every dense layer the workload trains; None for the conv DAE.

  DEC trains the encoder only (the decoder is dropped); the soft assignment against 10 centres is negligible.
  """
  if workload in ('ae', 'dec'):
    enc = list(zip((INPUT_DIM,) + tuple(model_cfg.dims), model_cfg.dims))
    return enc if workload == 'dec' else enc + [(o, i) for i, o in reversed(enc)]
  if workload == 'vae':
    h, z = model_cfg.hidden, model_cfg.latent
    return [(INPUT_DIM, h), (h, z), (h, z), (z, h), (h, INPUT_DIM)]
  return None


def conv_macs(features, image_shape=IMAGE_SHAPE) -> int:
  """Multiply-accumulates of one ConvAE forward pass (3x3 'SAME' convolutions on the padded image)."""
  m = 2 ** len(features)
  h, w = -(-image_shape[0] // m) * m, -(-image_shape[1] // m) * m
  macs, c = 0, image_shape[2]
  for f in features:                  # conv at this resolution, then 2x2 max-pool
    macs, c, h, w = macs + h * w * c * f * 9, f, h // 2, w // 2
  for f in features[::-1]:            # conv at this resolution, then 2x up-sampling
    macs, c, h, w = macs + h * w * c * f * 9, f, h * 2, w * 2
  return macs + h * w * c * 1 * 9     # output conv to one channel


def train_flops_per_sample(workload: str, model_cfg) -> int:
  """3 x 2 x forward MACs: the forward pass, then input and weight gradients of the same size each.

  The usual convention, slightly generous: JAX skips the input gradient of the first layer (the data is not
  differentiated), so the work really done is ~4% less for the AE and ~8% less for DEC's encoder, and the
  GFLOP/s and % of ceiling are overstated by about that much. Biases, activations, the loss and the SGD
  update are elementwise and left out.
  """
  layers = dense_layers(workload, model_cfg)
  macs = sum(i * o for i, o in layers) if layers is not None else conv_macs(model_cfg.features)
  return 3 * 2 * macs


# ---------------------------------------------------------------------------------------------- ceilings

@functools.partial(jax.jit, static_argnames='small_first')
def _dot_loop(a, b, reps, small_first):
  """`reps` dependent copies of a @ b in one program (f32 accumulation), so dispatch costs nothing.

  Each iteration adds a negligible multiple of the previous result to the smaller operand (an O(1/n) extra
  pass): without that dependency XLA may hoist the loop-invariant matmul out of the loop. The product is
  carried out of the loop so that it is computed in full.
  """
  def body(_, carry):
    s, _ = carry
    x, y = (a + s, b) if small_first else (a, b + s)
    out = jnp.dot(x, y, preferred_element_type=jnp.float32)
    return (out[0, 0] * 1e-30).astype(a.dtype), out

  init = (jnp.zeros((), a.dtype), jnp.zeros((a.shape[0], b.shape[1]), jnp.float32))
  return jax.lax.fori_loop(0, reps, body, init)[1]


@functools.cache
def gemm_seconds(m: int, k: int, n: int, dtype: str, repeats: int) -> float:
  """Median seconds of one (m, k) @ (k, n) matmul in `dtype`, looped long enough to time (cached per shape)."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (m, k), models.compute_dtype(dtype))
  b = jax.random.normal(kb, (k, n), models.compute_dtype(dtype))
  small_first = m * k <= k * n
  once = timed(lambda: _dot_loop(a, b, 1, small_first), 1)[0]  # compiles, then one rough timing
  reps = int(min(10_000, max(1, np.ceil(GEMM_MIN_SECONDS / once))))  # a traced bound: no recompilation
  return statistics.median(timed(lambda: _dot_loop(a, b, reps, small_first), repeats)) / reps


def step_gemms(layers: list[tuple[int, int]], batch: int) -> collections.Counter:
  """The matmuls of one training step: per dense layer x@W (B,in,out), dY@W.T (B,out,in), X.T@dY (in,B,out)."""
  return collections.Counter(s for i, o in layers for s in ((batch, i, o), (batch, o, i), (i, batch, o)))


def layer_ceiling(layers: list[tuple[int, int]], batch: int, dtype: str, repeats: int) -> float:
  """GFLOP/s of this model's own matmuls, each timed alone, combined as sum(FLOPs) / sum(seconds).

  That is the speed of a training step that ran every one of its matmuls as fast as it runs in isolation and
  did nothing else: a FLOP-weighted harmonic mean, dominated, as the real step is, by the big 500x2000
  layers. (A plain mean of per-shape GFLOP/s would give the tiny 2000x10 matmuls as much say as the big ones.)
  Forward and backward shapes both count since a step runs both; identical shapes are timed once.
  """
  gemms = step_gemms(layers, batch)
  flops = sum(c * 2 * m * k * n for (m, k, n), c in gemms.items())
  seconds = sum(c * gemm_seconds(m, k, n, dtype, repeats) for (m, k, n), c in gemms.items())
  return flops / seconds / 1e9


def square_ceiling(dtype: str, repeats: int) -> float:
  """GFLOP/s of a 2048^3 matmul: about the best this backend does on a matmul of any shape."""
  return 2 * SQUARE ** 3 / gemm_seconds(SQUARE, SQUARE, SQUARE, dtype, repeats) / 1e9


# ---------------------------------------------------------------------------------------------- workloads

def random_inputs(workload: str, n: int, seed: int = 0) -> jax.Array:
  """Uniform [0, 1] inputs of the workload's shape (NHWC images for the conv DAE, flat vectors otherwise)."""
  shape = IMAGE_SHAPE if workload in models.CONV_MODELS else (INPUT_DIM,)
  return jax.random.uniform(jax.random.key(seed), (n, *shape))


def autoencoder_seconds(workload: str, model_cfg, batch: int, dtype: str, num_batches: int, mesh,
                        repeats: int, augmented: bool = False) -> list[float]:
  """Seconds per epoch of `num_batches` steps of the library's pretraining epoch (SGD, momentum 0.9); with
  `augmented`, every batch randomly moved first (`pretrain.augment`)."""
  model = models.make_model(workload, IMAGE_SHAPE, model_cfg, models.compute_dtype(dtype))
  opt_cfg = udl_config.train_block()
  opt_cfg.update(optimizer='sgd', learning_rate=LEARNING_RATE, momentum=0.9)
  x = parallel.replicate(random_inputs(workload, num_batches * batch), mesh)
  state = parallel.replicate(train.init_state(model, x[:1], train.make_optimizer(opt_cfg), jax.random.key(1)),
                             mesh)
  loss_fn = losses.make_loss_fn(workload, model, model_cfg)
  if augmented:
    loss_fn = augment.augmented_loss(loss_fn, IMAGE_SHAPE)
  epoch = train.make_train_epoch(loss_fn, batch, mesh, scan=train.epoch_as_scan(workload))  # as train.fit
  key = jax.random.key(2)
  return timed(threaded(lambda s: epoch(s, x, key), state), repeats)


def dec_setup(model_cfg, dtype: str, n: int, mesh):
  """The encoder, a DEC TrainState (encoder params + centres, SGD momentum 0.9) and random x, p, order, y."""
  model = models.make_model('ae', IMAGE_SHAPE, model_cfg, models.compute_dtype(dtype))
  k = jax.random.split(jax.random.key(3), 5)
  x = random_inputs('dec', n, seed=4)
  params = {'ae': model.init(k[0], x[:1]), 'centres': jax.random.normal(k[1], (N_CLUSTERS, model_cfg.dims[-1]))}
  state = train_state.TrainState.create(apply_fn=None, params=params, tx=optax.sgd(LEARNING_RATE, momentum=0.9))
  p = jax.nn.softmax(jax.random.normal(k[2], (n, N_CLUSTERS)), axis=1)
  order = jax.random.permutation(k[3], n)
  y = np.asarray(jax.random.randint(k[4], (n,), 0, N_CLUSTERS))
  return model, parallel.replicate((state, x, p, order), mesh), y


def dec_chunk_seconds(model_cfg, batch: int, dtype: str, n: int, steps: int, mesh, repeats: int) -> list[float]:
  """Seconds of one `dec.make_train_chunk` call: `steps` DEC steps (one update interval) as one lax.scan."""
  model, (state, x, p, order), _ = dec_setup(model_cfg, dtype, n, mesh)
  chunk = dec.make_train_chunk(model, methods.get('dec'), 1.0, batch, steps, mesh)
  return timed(threaded(lambda s: chunk(s, x, p, order, 0, steps), (state, ())), repeats)


def dec_update_seconds(model_cfg, dtype: str, n: int, mesh, repeats: int) -> dict[str, float]:
  """Median seconds of the work between two DEC chunks, split as `dec.run` does it.

  predict: Q (and z) over all n samples, `dec.make_predict`; target: P = method.target(Q), jitted as in dec.run;
  host: the labels and the loss copied to the host, the label change and ACC/NMI/ARI (what dec.run does on
  the host every interval, with labels; without them the metrics are skipped).
  """
  model, (state, x, _, _), y = dec_setup(model_cfg, dtype, n, mesh)
  predict, method = dec.make_predict(model, methods.student_t(1.0), mesh), methods.get('dec')
  target = jax.jit(method.target)
  q, _ = predict((state.params, 0), x)
  loss = jnp.float32(0.5)

  def host():
    labels = np.asarray(jnp.argmax(q, axis=1))
    return float(loss), float(np.mean(labels != y)), metrics.evaluate(y, labels)

  out = {name: statistics.median(timed(fn, repeats)) for name, fn in (
      ('predict', lambda: predict((state.params, 0), x)), ('target', lambda: target(q)), ('host', host))}
  out['predict_flops'] = n * train_flops_per_sample('dec', model_cfg) // 3  # forward only
  return out


def log_update(update: dict, f32_ceiling: float) -> None:
  """One progress line for the DEC interval split; a note when predicting Q takes a second or more.

  Whether a slow predict is the code's fault or the machine's shows in its FLOP rate: at the 2048^3 ceiling
  it could not take less than predict_flops / ceiling.
  """
  rate = update['predict_flops'] / update['predict'] / 1e9
  log.info('      DEC interval: %.3f s steps, %.3f s predict Q (%.1f GFLOP/s), %.3f s target, %.3f s host',
           update['steps'], update['predict'], rate, update['target'], update['host'])
  if update['predict'] >= 1.0:
    log.info('      note: predict Q took %.2f s (>= 1 s); at the float32 2048^3 ceiling it would take %.2f s',
             update['predict'], update['predict_flops'] / f32_ceiling / 1e9)


# ---------------------------------------------------------------------------------------------- report

def machine() -> dict:
  """CPU model and core count, JAX and peer versions, backend and device kind: what the numbers depend on."""
  cpu = platform.processor() or platform.machine()
  try:
    cpu = next(l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
               if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  env = results.environment()
  env.update(cpu=cpu, xla_flags=os.environ.get('XLA_FLAGS', ''),
             peers={name: peers.version(name) for name in peers.NAMES})
  return env


def percent(value: float | None, ceiling: float | None) -> str:
  return f'{100 * value / ceiling:.0f}%' if value is not None and ceiling else 'n/a'


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
  return ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)] + ['| ' + ' | '.join(r) + ' |' for r in rows]


def _header(report: dict) -> list[str]:
  m, square = report['machine'], report['ceilings']['square']
  versions = ''.join(f'; {p} {v}' for p, v in m['peers'].items() if v)
  return ['# udl_jax training throughput', '',
          f"- Machine: {m['cpu']}, {m['cpu_count']} cores; jax {m['packages']['jax']}, backend {m['backend']}, "
          f"device kind {m['device_kind']} x {m['device_count']}{versions}",
          f"- Command: `{report['command']}`",
          f"- Date: {report['date']}; median of {report['flags']['repeats']} timed repeats after {WARMUP} warm-up",
          f"- Matmul ceilings at 2048³ (GFLOP/s): float32 {square['float32']:.1f}, bfloat16 with float32 "
          f"accumulation {square['bfloat16']:.1f}"]


def _throughput_table(report: dict) -> list[str]:
  """One row per (workload, batch, dtype): rate, GFLOP/s, % of each ceiling ('layers / 2048³'), peers."""
  square, peer_names = report['ceilings']['square'], report['peers_run']
  head = ['workload', 'batch', 'dtype', 'samples/s', 'GFLOP/s', '% f32 ceiling (layers / 2048³)',
          '% bf16 ceiling (layers / 2048³)'] + [f'{p}: samples/s (udl_jax ÷ {p})' for p in peer_names]
  rows = []
  for r in report['rows']:
    cells = [LABELS[r['workload']], str(r['batch']), r['dtype'], f"{r['samples_per_s']:,.0f}", f"{r['gflops']:.1f}"]
    for dt in ('float32', 'bfloat16'):
      at_layers = r['layer_ceiling'][dt] if r['layer_ceiling'] else None
      cells.append(f"{percent(r['gflops'], at_layers)} / {percent(r['gflops'], square[dt])}")
    peer_cells = [r['peers'].get(p) for p in peer_names]
    rows.append(cells + [f"{v['samples_per_s']:,.0f} ({v['ratio']:.2f}×)" if v else '—' for v in peer_cells])
  return _table(head, rows)


def _ceiling_table(report: dict) -> list[str]:
  """The layer-shape ceilings themselves, once per (workload, batch)."""
  seen = {(r['workload'], r['batch']): r['layer_ceiling'] for r in report['rows'] if r['layer_ceiling']}
  return _table(['workload', 'batch', 'float32', 'bfloat16'],
                [[LABELS[w], str(b), f"{c['float32']:.1f}", f"{c['bfloat16']:.1f}"] for (w, b), c in seen.items()])


def _dec_interval_table(report: dict) -> list[str]:
  """Seconds of each part of one DEC update interval, and the share spent in the training steps."""
  rows = []
  for r in (r for r in report['rows'] if r['workload'] == 'dec'):
    u = r['update']
    parts = [u['steps'], u['predict'], u['target'], u['host']]
    rows.append([str(r['batch']), r['dtype']] + [f'{v:.3f}' for v in parts] + [f'{100 * parts[0] / sum(parts):.0f}%'])
  return _table(['batch', 'dtype', 'steps (s)', 'predict Q (s)', 'target P (s)', 'host sync (s)', 'share of steps'],
                rows)


def markdown(report: dict) -> str:
  """throughput.md: the header, the main table, the layer-shape ceilings and the DEC update-interval split."""
  f = report['flags']
  return '\n'.join(
      _header(report) + [''] + _throughput_table(report)
      + ['', '## Matmul ceilings at the layer shapes of each row (GFLOP/s, forward + backward matmuls)', '']
      + _ceiling_table(report)
      + ['', f"## DEC update interval ({f['dec_steps']} steps; Q and P over {f['dec_samples']:,} samples)", '']
      + _dec_interval_table(report)) + '\n'


# ---------------------------------------------------------------------------------------------- main

def plan(workloads: list[str], batch_sizes: list[int], dtypes: list[str]) -> list[tuple[str, int, str]]:
  """(workload, batch, dtype) rows: the dense AE and DEC at every batch and dtype, DAE and VAE at 256, float32.

  Mixed precision is measured on DEC's own model (AE and DEC); the conv DAE is slow enough on CPU as it is.
  """
  rows = {'ae': [('ae', b, d) for b in batch_sizes for d in dtypes], 'dae': [('dae', SMALL_BATCH, 'float32')],
          'vae': [('vae', SMALL_BATCH, 'float32')], 'dec': [('dec', b, d) for b in batch_sizes for d in dtypes]}
  return [row for w in LABELS if w in workloads for row in rows[w]]


def usable_peers(names: list[str]) -> list[str]:
  """The requested peers whose framework imports; a printed note for each one skipped."""
  usable = []
  for name in names:
    if name not in peers.NAMES:
      raise app.UsageError(f"unknown peer '{name}'; valid: {', '.join(peers.NAMES)}")
    if peers.version(name) is None:
      log.info('peer %s skipped: not importable', name)
    else:
      usable.append(name)
  return usable


def measure_row(workload: str, batch: int, dtype: str, model_cfg, mesh, peer_names: list[str]) -> dict:
  """Throughput, FLOP rate, ceilings and (dense AE only) peer rates of one row."""
  repeats = _REPEATS.value
  if workload == 'dec':
    steps = _DEC_STEPS.value
    seconds = dec_chunk_seconds(model_cfg, batch, dtype, _DEC_SAMPLES.value, steps, mesh, repeats)
  else:
    steps = _CONV_BATCHES.value if workload in models.CONV_MODELS else _BATCHES.value
    seconds = autoencoder_seconds(workload, model_cfg, batch, dtype, steps, mesh, repeats)
  rate = steps * batch / statistics.median(seconds)
  flops = train_flops_per_sample(workload, model_cfg)
  layers = dense_layers(workload, model_cfg)
  row = {'workload': workload, 'batch': batch, 'dtype': dtype, 'steps': steps, 'seconds': seconds,
         'samples_per_s': rate, 'flops_per_sample': flops, 'gflops': rate * flops / 1e9,
         'layer_ceiling': {dt: layer_ceiling(layers, batch, dt, repeats) for dt in models.DTYPES}
         if layers else None, 'peers': {}}
  if workload == 'ae':
    dims = (INPUT_DIM, *model_cfg.dims)
    for name in peer_names:
      epoch = peers.make_epoch(name, dims, batch, steps, dtype, LEARNING_RATE)
      peer_rate = steps * batch / statistics.median(timed(epoch, repeats))
      row['peers'][name] = {'samples_per_s': peer_rate, 'ratio': rate / peer_rate}
  return row


def describe(row: dict) -> str:
  peers_text = ''.join(f", {p} {v['samples_per_s']:,.0f}/s (x{v['ratio']:.2f})" for p, v in row['peers'].items())
  return (f"{LABELS[row['workload']]} batch {row['batch']} {row['dtype']}: {row['samples_per_s']:,.0f} samples/s, "
          f"{row['gflops']:.1f} GFLOP/s{peers_text}")


FLAG_NAMES = ('batch_sizes', 'dtype', 'workloads', 'peers', 'repeats', 'batches', 'conv_batches', 'dec_steps',
              'dec_samples')


def parse_flags(mesh) -> tuple[list[str], list[int], list[str]]:
  """(workloads, batch sizes, dtypes), checked before any measurement so a typo fails in the first second."""
  workloads = [w.strip() for w in _WORKLOADS.value]
  if set(workloads) - set(LABELS):
    raise app.UsageError(f"unknown workloads {sorted(set(workloads) - set(LABELS))}; valid: {', '.join(LABELS)}")
  dtypes = [d.strip() for d in _DTYPES.value]
  try:
    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
    for d in dtypes:
      models.compute_dtype(d)
    for b in batch_sizes + [SMALL_BATCH]:
      parallel.check_batch_size(b, mesh)
  except (ValueError, UserError) as e:  # int('2x'), an unknown dtype, a batch the devices cannot split
    raise app.UsageError(f'--batch_sizes / --dtype: {e}') from e
  return workloads, batch_sizes, dtypes


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  mesh = parallel.make_mesh()
  workloads, batch_sizes, dtypes = parse_flags(mesh)
  model_cfg = udl_config.model_block('ae')
  peer_names = usable_peers([p.strip() for p in _PEERS.value if p.strip()])
  out, repeats = Path(_OUT.value), _REPEATS.value
  report = {'command': shlex.join(['python', '-m', 'benchmarks.throughput'] + sys.argv[1:]),
            'date': datetime.datetime.now().isoformat(timespec='seconds'), 'machine': machine(),
            'flags': {f: flags.FLAGS[f].value for f in FLAG_NAMES}, 'peers_run': peer_names,
            'learning_rate': LEARNING_RATE, 'warmup': WARMUP, 'rows': []}
  m = report['machine']
  log.info('throughput on %s (%d cores), jax %s %s %s x %d', m['cpu'], m['cpu_count'], m['packages']['jax'],
           m['backend'], m['device_kind'], m['device_count'])
  report['ceilings'] = {'square': {dt: square_ceiling(dt, repeats) for dt in models.DTYPES}}
  log.info('matmul 2048^3: float32 %.1f GFLOP/s, bfloat16 %.1f GFLOP/s', *report['ceilings']['square'].values())

  todo, updates = plan(workloads, batch_sizes, dtypes), {}
  for i, (workload, batch, dtype) in enumerate(todo, 1):
    log.info('[%d/%d] %s batch %d %s ...', i, len(todo), LABELS[workload], batch, dtype)
    row = measure_row(workload, batch, dtype, model_cfg, mesh, peer_names)
    if workload == 'dec':  # the interval's other parts do not depend on the batch size: measured once per dtype
      if dtype not in updates:
        updates[dtype] = dec_update_seconds(model_cfg, dtype, _DEC_SAMPLES.value, mesh, repeats)
      row['update'] = {'steps': statistics.median(row['seconds']), **updates[dtype]}
      log_update(row['update'], report['ceilings']['square']['float32'])
    log.info('      %s', describe(row))
    report['rows'].append(row)
    results.write_json(out / 'throughput.json', report)  # partial results survive an interrupted run
  results.write_atomic(out / 'throughput.md', markdown(report))
  log.info('wrote %s and %s', out / 'throughput.json', out / 'throughput.md')
  print(markdown(report))


if __name__ == '__main__':
  app.run(main)

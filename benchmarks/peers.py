"""Like-for-like peers for `benchmarks/throughput.py`: DEC's dense autoencoder trained by other frameworks.

Each peer builds the same model (Linear 784-500-500-2000-10 and its mirror, ReLU inside, linear embedding and
output), MSE loss and SGD(lr, momentum 0.9) on random data held in memory, and returns a zero-argument callable
that trains one epoch (a fresh shuffle, then every full batch). Nothing here times anything: throughput.py
times these callables with the same helper it uses for udl_jax, so both sides are measured identically.

A peer whose framework is not importable raises `Unavailable`; the caller prints the reason and moves on.
"""

from __future__ import annotations

import os

import numpy as np

NAMES = ('torch', 'keras')


class Unavailable(Exception):
  """The peer's framework is not installed (or cannot run this configuration)."""


def layer_plan(dims: tuple[int, ...]) -> list[tuple[int, int, bool]]:
  """(in, out, relu) for every Linear of the autoencoder dims[0]-...-dims[-1]-...-dims[0].

  ReLU after every layer except the embedding (last encoder layer) and the output, as udl_jax's DenseAE.
  """
  widths = list(dims) + list(dims[-2::-1])
  embedding = len(dims) - 2
  return [(i, o, k not in (embedding, len(widths) - 2)) for k, (i, o) in enumerate(zip(widths, widths[1:]))]


def make_epoch(name: str, dims: tuple[int, ...], batch_size: int, num_batches: int, dtype: str,
               learning_rate: float, seed: int = 0):
  if name == 'torch':
    return torch_epoch(dims, batch_size, num_batches, dtype, learning_rate, seed)
  if name == 'keras':
    return keras_epoch(dims, batch_size, num_batches, dtype, learning_rate, seed)
  raise ValueError(f'unknown peer {name!r}; valid: {", ".join(NAMES)}')


def version(name: str) -> str | None:
  """The peer framework's version, or None when it is not importable."""
  try:
    if name == 'torch':
      import torch
      return torch.__version__
    return _import_keras().__version__
  except (ImportError, Unavailable):
    return None


def torch_epoch(dims, batch_size, num_batches, dtype, learning_rate, seed=0):
  """PyTorch eager, all CPU threads (or the GPU when torch sees one); bfloat16 via autocast, f32 weights."""
  try:
    import torch
  except ImportError as e:
    raise Unavailable(f'torch is not importable ({e}); pip install torch') from e
  torch.manual_seed(seed)
  torch.set_num_threads(os.cpu_count())
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  layers = []
  for i, o, relu in layer_plan(dims):
    layers += [torch.nn.Linear(i, o)] + ([torch.nn.ReLU()] if relu else [])
  model = torch.nn.Sequential(*layers).to(device)
  opt = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
  n = batch_size * num_batches
  x = torch.rand(n, dims[0], device=device)

  def epoch():
    order = torch.randperm(n, device=device)
    for b in range(num_batches):
      xb = x[order[b * batch_size:(b + 1) * batch_size]]
      with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
        recon = model(xb)
      loss = torch.nn.functional.mse_loss(recon.float(), xb)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    if device.type == 'cuda':
      torch.cuda.synchronize()

  return epoch


def _import_keras():
  """tf_keras (Keras 2) when installed, else tensorflow.keras (Keras 3 from TF 2.16; same fit API)."""
  try:
    import tf_keras
    return tf_keras
  except ImportError:
    pass
  try:
    from tensorflow import keras
    return keras
  except ImportError as e:
    raise Unavailable(f'neither tf_keras nor tensorflow is importable ({e})') from e


def keras_epoch(dims, batch_size, num_batches, dtype, learning_rate, seed=0):
  """Keras `model.fit` for one epoch with shuffle=True; bfloat16 via the 'mixed_bfloat16' layer policy."""
  keras = _import_keras()
  keras.utils.set_random_seed(seed)
  policy = 'mixed_bfloat16' if dtype == 'bfloat16' else 'float32'
  model = keras.Sequential([keras.Input((dims[0],))] + [
      keras.layers.Dense(o, activation='relu' if relu else None, dtype=policy) for _, o, relu in layer_plan(dims)])
  model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9), loss='mse')
  x = np.random.default_rng(seed).random((batch_size * num_batches, dims[0]), dtype=np.float32)

  def epoch():
    model.fit(x, x, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)

  return epoch

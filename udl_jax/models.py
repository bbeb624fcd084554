"""Autoencoders as Flax Linen modules with pure `apply`; each has `encode`, `decode` and `__call__(x, rng)`.

`__call__` returns a dict of outputs so that every loss reads what it needs:
  DenseAE: recon, z, hidden (all hidden activations, for the sparse penalty)   input (B, d)
  ConvAE:  recon, z                                                            input (B, H, W, C)
  VAE:     logits, mean, logvar, z                                             input (B, d)
`dtype` is the compute dtype (bfloat16 for mixed precision); parameters stay float32 and every output that a
loss reads is float32.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from udl_jax.errors import UserError

KERNEL_INITS = {
    'lecun_normal': nn.initializers.lecun_normal(),
    # DEC-keras: VarianceScaling(scale=1/3, mode='fan_in', distribution='uniform'), used with SGD(lr=1).
    'dec': nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
    # Keras' default, which DEC-keras uses with its Adam presets (USPS, Reuters).
    'glorot_uniform': nn.initializers.glorot_uniform(),
}
ACTIVATIONS = {'relu': nn.relu, 'sigmoid': nn.sigmoid, 'tanh': nn.tanh, 'linear': lambda x: x}


def _kernel_init(name: str):
  if name not in KERNEL_INITS:
    raise UserError(f"unknown kernel_init '{name}'; valid: {', '.join(KERNEL_INITS)}")
  return KERNEL_INITS[name]


def _activation(name: str):
  if name not in ACTIVATIONS:
    raise UserError(f"unknown activation '{name}'; valid: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class DenseAE(nn.Module):
  """DEC's stacked autoencoder d-500-500-2000-10: ReLU inside, linear embedding and output by default."""
  out_dim: int
  dims: Sequence[int] = (500, 500, 2000, 10)
  activation: str = 'relu'
  bottleneck_activation: str = 'linear'
  output_activation: str = 'linear'
  kernel_init: str = 'lecun_normal'
  dtype: Any = jnp.float32

  def setup(self):
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name,
                                     kernel_init=_kernel_init(self.kernel_init))
    self.encoder = [dense(n, f'encoder_{i}') for i, n in enumerate(self.dims)]
    decoder_dims = list(self.dims[-2::-1]) + [self.out_dim]
    self.decoder = [dense(n, f'decoder_{i}') for i, n in enumerate(decoder_dims)]

  def _run(self, layers, h, last_activation):
    """(output, every layer's output, the last layer's pre-activation)."""
    hidden = []
    for i, layer in enumerate(layers):
      last = i == len(layers) - 1
      pre = layer(h)
      h = _activation(last_activation if last else self.activation)(pre)
      hidden.append(h)
    return h, hidden, pre

  def encode(self, x):
    return self._run(self.encoder, x, self.bottleneck_activation)[0].astype(jnp.float32)

  def encode_with_hidden(self, x):
    """(embedding, the encoder's last hidden layer): what a posterior head on top of the encoder reads (VaDE)."""
    z, hidden, _ = self._run(self.encoder, x, self.bottleneck_activation)
    return z.astype(jnp.float32), hidden[-2]

  def decode(self, z):
    return self._run(self.decoder, z, self.output_activation)[0].astype(jnp.float32)

  def decode_logits(self, z):
    """The output layer before its activation: a sigmoid output's logits, for a Bernoulli likelihood."""
    return self._run(self.decoder, z, self.output_activation)[2].astype(jnp.float32)

  def __call__(self, x, rng=None):
    z, enc_hidden, _ = self._run(self.encoder, x, self.bottleneck_activation)
    recon, dec_hidden, logits = self._run(self.decoder, z, self.output_activation)
    hidden = [h.astype(jnp.float32) for h in enc_hidden + dec_hidden[:-1]]
    return {'recon': recon.astype(jnp.float32), 'logits': logits.astype(jnp.float32), 'z': z.astype(jnp.float32),
            'hidden': hidden}


MATMUL_CONV_MAX_SIDE = 4  # on a CPU, maps of at most this side convolve as matrix products (`conv`)


def conv_by_matmul(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, strides, padding)` for NHWC inputs and HWIO kernels as one matrix
  product of the kernel with the input's shifted, strided views (kh * kw slices, concatenated on channels)."""
  kh, kw, c_in, c_out = kernel.shape
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
  (top, bottom), (left, right) = padding
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)])
  (sh, sw), (h, w) = strides, x.shape[1:3]
  out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
  views = [jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, c_in),
                         (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
  return jnp.concatenate(views, axis=-1) @ kernel.reshape(kh * kw * c_in, c_out)


def conv(x, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
         **options):
  """`lax.conv_general_dilated` with NHWC inputs and HWIO kernels (Flax's layout; `nn.Conv`'s
  `conv_general_dilated`). On a CPU a map of at most MATMUL_CONV_MAX_SIDE per side goes through
  `conv_by_matmul`: XLA:CPU's convolution gradients on such tiny maps are slow where slices and one matrix
  product are not (DCEC's clustering step 5.4x faster on digits, 1.2x on MNIST; on larger maps XLA's own
  convolution is the faster: benchmarks/README.md). Elsewhere (a GPU's cuDNN) XLA's convolution."""
  dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
  grouped = options.get('feature_group_count', 1) != 1
  if not (dilated or grouped) and jax.default_backend() == 'cpu' and max(x.shape[1:3]) <= MATMUL_CONV_MAX_SIDE:
    return conv_by_matmul(x, kernel, window_strides, padding)
  return jax.lax.conv_general_dilated(x, kernel, window_strides, padding, lhs_dilation, rhs_dilation,
                                      dimension_numbers or ('NHWC', 'HWIO', 'NHWC'), **options)


class ConvAE(nn.Module):
  """Denoising conv autoencoder: Conv 64/32/16 (3x3, ReLU) with 2x2 max-pooling, mirrored with up-sampling.

  Inputs are zero-padded to a multiple of 8 (three poolings) and outputs cropped back, so 8x8, 16x16 and
  28x28 images all work. Output is a sigmoid image in [0, 1].
  """
  features: Sequence[int] = (64, 32, 16)
  dtype: Any = jnp.float32

  def setup(self):
    conv = lambda n, name: nn.Conv(n, (3, 3), padding='SAME', dtype=self.dtype, param_dtype=jnp.float32,
                                   name=name)
    self.enc = [conv(n, f'encoder_{i}') for i, n in enumerate(self.features)]
    self.dec = [conv(n, f'decoder_{i}') for i, n in enumerate(self.features[::-1])]
    self.out = nn.Conv(1, (3, 3), padding='SAME', dtype=self.dtype, param_dtype=jnp.float32, name='output')

  def _pad(self, x):
    m = 2 ** len(self.features)
    h, w = x.shape[1:3]
    return jnp.pad(x, ((0, 0), (0, -h % m), (0, -w % m), (0, 0)))

  def encode_map(self, x):
    h = self._pad(x)
    for layer in self.enc:
      h = nn.max_pool(nn.relu(layer(h)), (2, 2), strides=(2, 2))
    return h

  def encode(self, x):
    return self.encode_map(x).reshape(x.shape[0], -1).astype(jnp.float32)

  def decode_map(self, h, out_hw):
    for layer in self.dec:
      h = nn.relu(layer(h))
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour up-sampling
    out = nn.sigmoid(self.out(h))
    return out[:, :out_hw[0], :out_hw[1], :].astype(jnp.float32)

  def __call__(self, x, rng=None):
    h = self.encode_map(x)
    return {'recon': self.decode_map(h, x.shape[1:3]), 'z': h.reshape(x.shape[0], -1).astype(jnp.float32)}


def _transpose_padding(k: int, padding: str) -> tuple[int, int]:
  """(before, after) padding of the stride-2 input-dilated convolution that `lax.conv_transpose` runs."""
  length = k if padding == 'SAME' else k + max(k - 2, 0)  # as jax's _conv_transpose_padding for stride 2
  before = k - 1 if padding == 'VALID' or k <= 2 else -(-k // 2)
  return before, length - before


def _phase_taps(k: int, length: int, padding: str):
  """Per output phase r (rows 2m + r) of a stride-2 transposed convolution along one axis: the kernel taps it
  uses (k0::2), and the (before, after) padding of the input for a stride-1 convolution with them that gives
  ceil(out / 2) rows; and the output length."""
  before, after = _transpose_padding(k, padding)
  out = 2 * (length - 1) + 1 + before + after - k + 1
  half = -(-out // 2)
  phases = []
  for r in (0, 1):
    k0 = (before - r) % 2
    taps = len(range(k0, k, 2))
    pad_before = (before - r - k0) // 2  # the first output row m = 0 reads input row m - pad_before
    phases.append((k0, (pad_before, half - 1 + taps - length - pad_before)))
  return phases, out


def conv_transpose_by_phases(x: jax.Array, kernel: jax.Array, padding: str) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (2, 2), padding)` (NHWC, HWIO, no kernel flip) as four stride-1 convolutions,
  one per output phase, interleaved. The same sums without the zeros of the dilated input: a quarter of the
  work, and XLA:CPU's gradient of an input-dilated convolution is a naive loop (20-50x slower; measured in
  benchmarks/README.md), while these are ordinary convolutions."""
  (kh, kw), (h, w) = kernel.shape[:2], x.shape[1:3]
  if min(kh, kw) < 2:
    raise ValueError(f'conv_transpose_by_phases needs kernels of at least 2x2 (every phase a tap), got {kh}x{kw}')
  (rows, out_h), (cols, out_w) = _phase_taps(kh, h, padding), _phase_taps(kw, w, padding)
  phase = lambda r, c: conv(x, kernel[rows[r][0]::2, cols[c][0]::2], (1, 1), (rows[r][1], cols[c][1]))
  y = jnp.stack([jnp.stack([phase(r, 0), phase(r, 1)], axis=3) for r in (0, 1)], axis=2)  # (N, H', 2, W', 2, C)
  n, half_h, _, half_w, _, c = y.shape
  return y.reshape(n, 2 * half_h, 2 * half_w, c)[:, :out_h, :out_w]


class PhaseConvTranspose(nn.Module):
  """nn.ConvTranspose with stride 2 (same parameters, same outputs), computed by `conv_transpose_by_phases`."""
  features: int
  kernel_size: int
  padding: str = 'SAME'
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return conv_transpose_by_phases(x, kernel, self.padding) + bias


class ConvEmbeddingAE(nn.Module):
  """DCEC's convolutional autoencoder (Guo et al. 2017): Conv 32 (5x5) - 64 (5x5) - 128 (3x3), stride 2, ReLU, a
  linear dense embedding (10), then Dense (ReLU) back to the last map and transposed convolutions mirroring the
  encoder, linear output. The third convolution is 'valid' unless the side is a multiple of 8 (28 -> 14 -> 7
  -> 3; 16 -> 8 -> 4 -> 2), as DCEC's code does, so that the decoder gives the input size back. DCEC's Keras
  layers start from glorot_uniform (`kernel_init`; Flax's default is lecun_normal)."""
  side: int
  features: Sequence[int] = (32, 64, 128)
  embedding: int = 10
  kernel_init: str = 'lecun_normal'
  dtype: Any = jnp.float32
  transposed_conv: Callable = PhaseConvTranspose  # (features, kernel_size, padding=...) -> stride-2 module

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_kernel_init(self.kernel_init))
    third = 'SAME' if self.side % 8 == 0 else 'VALID'
    after_two = -(-self.side // 4)
    self.map_side = -(-after_two // 2) if third == 'SAME' else (after_two - 3) // 2 + 1
    decoded = 4 * (2 * self.map_side if third == 'SAME' else 2 * (self.map_side - 1) + 3)
    if self.map_side < 1 or decoded != self.side:
      raise UserError(f'conv_ae (DCEC) cannot give back {self.side}x{self.side} images: its strided layers need '
                      'a side that is a multiple of 4 (28, 16, 8, ...); use --config.image_size=28')
    strided = lambda i, k, padding: nn.Conv(self.features[i], (k, k), 2, padding=padding, conv_general_dilated=conv,
                                            name=f'encoder_{i}', **kw)
    self.encoder = [strided(0, 5, 'SAME'), strided(1, 5, 'SAME'), strided(2, 3, third)]
    self.to_embedding = nn.Dense(self.embedding, name='embedding', **kw)
    self.from_embedding = nn.Dense(self.map_side ** 2 * self.features[2], name='decoder_dense', **kw)
    self.decoder = [self.transposed_conv(self.features[1], 3, padding=third, name='decoder_0', **kw),
                    self.transposed_conv(self.features[0], 5, padding='SAME', name='decoder_1', **kw),
                    self.transposed_conv(1, 5, padding='SAME', name='decoder_2', **kw)]

  def encode(self, x):
    h = x
    for layer in self.encoder:
      h = nn.relu(layer(h))
    return self.to_embedding(h.reshape(x.shape[0], -1)).astype(jnp.float32)

  def decode(self, z):
    h = nn.relu(self.from_embedding(z)).reshape(z.shape[0], self.map_side, self.map_side, self.features[2])
    for layer in self.decoder[:-1]:
      h = nn.relu(layer(h))
    return self.decoder[-1](h).astype(jnp.float32)

  def __call__(self, x, rng=None):
    z = self.encode(x)
    return {'recon': self.decode(z), 'z': z}


class VAE(nn.Module):
  """Variational autoencoder: d-500-(mean, log-variance of a 10-d latent); decoder 10-500-d Bernoulli logits."""
  out_dim: int
  hidden: int = 500
  latent: int = 10
  dtype: Any = jnp.float32

  def setup(self):
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name)
    self.enc_hidden, self.enc_mean, self.enc_logvar = dense(self.hidden, 'encoder_0'), dense(
        self.latent, 'mean'), dense(self.latent, 'logvar')
    self.dec_hidden, self.dec_out = dense(self.hidden, 'decoder_0'), dense(self.out_dim, 'decoder_1')

  def encode_stats(self, x):
    h = nn.relu(self.enc_hidden(x))
    return self.enc_mean(h).astype(jnp.float32), self.enc_logvar(h).astype(jnp.float32)

  def encode(self, x):
    return self.encode_stats(x)[0]

  def decode_logits(self, z):
    return self.dec_out(nn.relu(self.dec_hidden(z))).astype(jnp.float32)

  def decode(self, z):
    return nn.sigmoid(self.decode_logits(z))

  def __call__(self, x, rng):
    mean, logvar = self.encode_stats(x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    return {'logits': self.decode_logits(z), 'mean': mean, 'logvar': logvar, 'z': z}


MODEL_NAMES = ('ae', 'sparse_ae', 'dae', 'conv_ae', 'vae')
CONV_MODELS = ('dae', 'conv_ae')


def is_conv(model: str | nn.Module) -> bool:
  """Whether a model (by name, or a built module) runs convolutions."""
  return model in CONV_MODELS if isinstance(model, str) else isinstance(model, (ConvAE, ConvEmbeddingAE))


def make_model(name: str, image_shape: tuple[int, int, int], config=None, dtype=jnp.float32) -> nn.Module:
  """Builds the module for a model name; `config` is the `model` block of a run config (may be None)."""
  get = (lambda key, default: config.get(key, default)) if config is not None else (lambda key, d: d)
  d = image_shape[0] * image_shape[1] * image_shape[2]
  if name in ('ae', 'sparse_ae'):
    return DenseAE(out_dim=d, dims=tuple(get('dims', (500, 500, 2000, 10))),
                   activation=get('activation', 'relu'),
                   bottleneck_activation=get('bottleneck_activation', 'linear'),
                   output_activation=get('output_activation', 'linear'),
                   kernel_init=get('kernel_init', 'lecun_normal'), dtype=dtype)
  if name == 'dae':
    return ConvAE(features=tuple(get('features', (64, 32, 16))), dtype=dtype)
  if name == 'conv_ae':
    if image_shape[0] != image_shape[1] or image_shape[2] != 1:
      raise UserError(f'conv_ae takes square one-channel images, got {image_shape}')
    return ConvEmbeddingAE(side=image_shape[0], features=tuple(get('conv_features', (32, 64, 128))),
                           embedding=get('dims', (10,))[-1], kernel_init=get('kernel_init', 'lecun_normal'),
                           dtype=dtype)
  if name == 'vae':
    return VAE(out_dim=d, hidden=get('hidden', 500), latent=get('latent', 10), dtype=dtype)
  raise UserError(f"unknown model '{name}'; valid names: {', '.join(MODEL_NAMES)}")


DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str):
  if name not in DTYPES:
    raise UserError(f"unknown dtype '{name}'; valid: {', '.join(DTYPES)}")
  return DTYPES[name]


def from_config(config, image_shape: tuple[int, int, int]) -> nn.Module:
  """The module a run config describes (`model` block, `dtype`: bfloat16 compute for mixed precision)."""
  return make_model(config.model.name, image_shape, config.model, compute_dtype(config.dtype))


def model_input(name: str, x):
  """Dense models read flat vectors, the conv model NHWC images."""
  return x if name in CONV_MODELS else x.reshape(x.shape[0], -1)

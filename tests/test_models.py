"""The autoencoders' shapes and dtypes on every input size, the noise model, and errors for bad names."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from udl_jax import config, losses, models
from udl_jax.errors import UserError

SIZES = [(8, 8, 1), (16, 16, 1), (28, 28, 1)]


def _tiny_cfg(name):
  cfg = config.model_block(name)
  cfg.dims = (32, 16, 4)
  cfg.features = (8, 4, 4)
  cfg.conv_features = (4, 8, 8)
  cfg.hidden, cfg.latent = 32, 4
  return cfg


def _fill(shapes, seed=0):
  """Concrete parameters for `jax.eval_shape(model.init, ...)`'s shapes, without compiling the initialisers
  (XLA compiles random initialisers slowly on a busy CPU; the forward pass is what these tests are about)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(scale=0.2, size=s.shape), s.dtype), shapes)


def _build(name, shape, dtype=jnp.float32, batch=3):
  """(model, abstract params, input): abstract params come from `eval_shape` of the real `init`."""
  model = models.make_model(name, shape, _tiny_cfg(name), dtype=dtype)
  x = models.model_input(name, jax.random.uniform(jax.random.key(0), (batch, *shape)))
  params = jax.eval_shape(model.init, jax.random.key(1), x, jax.random.key(2))
  return model, params, x


def _leaves_dtypes(tree):
  return {str(leaf.dtype) for leaf in jax.tree.leaves(tree)}


@pytest.mark.parametrize('shape', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('name', models.MODEL_NAMES)
def test_shapes(name, shape):
  """Shapes of every output, traced through the real modules (eval_shape runs all the shape logic)."""
  model, params, x = _build(name, shape)
  d = shape[0] * shape[1] * shape[2]
  out = jax.eval_shape(model.apply, params, x, jax.random.key(3))
  z = jax.eval_shape(lambda p, x: model.apply(p, x, method=model.encode), params, x)
  if name in ('ae', 'sparse_ae'):
    assert x.shape == (3, d)
    assert out['recon'].shape == (3, d) and out['z'].shape == (3, 4) and z.shape == (3, 4)
    # every hidden activation except the output: encoder 32, 16, 4 and decoder 16, 32
    assert [h.shape[1] for h in out['hidden']] == [32, 16, 4, 16, 32]
    recon = jax.eval_shape(lambda p, z: model.apply(p, z, method=model.decode), params, z)
    assert recon.shape == (3, d)
  elif name == 'dae':
    assert x.shape == (3, *shape)
    assert out['recon'].shape == x.shape  # padded to a multiple of 8 inside, cropped back
    padded = [-(-s // 8) * 8 for s in shape[:2]]
    assert z.shape == (3, padded[0] // 8 * padded[1] // 8 * 4) and out['z'].shape == z.shape
  elif name == 'conv_ae':  # DCEC: strided convolutions, a dense embedding (dims[-1]) and back to the same size
    assert x.shape == (3, *shape)
    assert out['recon'].shape == x.shape and out['z'].shape == z.shape == (3, 4)
    recon = jax.eval_shape(lambda p, z: model.apply(p, z, method=model.decode), params, z)
    assert recon.shape == x.shape
  else:  # vae
    assert x.shape == (3, d)
    assert out['logits'].shape == (3, d)
    assert out['mean'].shape == out['logvar'].shape == out['z'].shape == (3, 4)
    assert z.shape == (3, 4)
    decoded = jax.eval_shape(lambda p, z: model.apply(p, z, method=model.decode), params, z)
    assert decoded.shape == (3, d)
  assert _leaves_dtypes(params) == {'float32'} and _leaves_dtypes(out) == {'float32'}


@pytest.mark.parametrize('name', ['ae', 'dae', 'vae'])
def test_forward_values(name):
  """Numbers, on 28x28 (the conv model pads to 32 and crops back): encode/decode agree with __call__."""
  model, shapes, x = _build(name, (28, 28, 1))
  params = _fill(shapes)
  out = jax.jit(model.apply)(params, x, jax.random.key(3))
  encode = jax.jit(lambda p, x: model.apply(p, x, method=model.encode))
  decode = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))
  z = encode(params, x)
  for leaf in jax.tree.leaves(out):
    assert bool(jnp.isfinite(leaf).all())
  if name == 'ae':
    np.testing.assert_allclose(np.asarray(out['z']), np.asarray(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(decode(params, z)), np.asarray(out['recon']), rtol=1e-4, atol=1e-5)
  elif name == 'dae':
    r = np.asarray(out['recon'])
    assert r.shape == x.shape and r.min() >= 0.0 and r.max() <= 1.0  # a sigmoid image
    np.testing.assert_allclose(np.asarray(out['z']), np.asarray(z), rtol=1e-5, atol=1e-6)
  else:
    np.testing.assert_allclose(np.asarray(z), np.asarray(out['mean']), rtol=1e-6)  # encode = the mean
    decoded = np.asarray(decode(params, z))
    assert decoded.min() >= 0.0 and decoded.max() <= 1.0


def test_default_architectures_build():
  """The paper-size defaults (no config block): DEC's d-500-500-2000-10, conv 64/32/16, VAE 500/10."""
  x = jnp.zeros((2, 28 * 28))
  ae = models.make_model('ae', (28, 28, 1))
  params = jax.eval_shape(ae.init, jax.random.key(0), x)
  assert [params['params'][f'encoder_{i}']['kernel'].shape[1] for i in range(4)] == [500, 500, 2000, 10]
  assert params['params']['decoder_3']['kernel'].shape == (500, 784)
  dae = models.make_model('dae', (28, 28, 1))
  img = jnp.zeros((2, 28, 28, 1))
  out = jax.eval_shape(lambda k, x: dae.apply(dae.init(k, x), x), jax.random.key(0), img)
  assert out['recon'].shape == img.shape and out['z'].shape == (2, 4 * 4 * 16)
  vae = models.make_model('vae', (28, 28, 1))
  vp = jax.eval_shape(vae.init, jax.random.key(0), x, jax.random.key(1))
  assert vp['params']['mean']['kernel'].shape == (500, 10)


def test_vae_sampling_is_deterministic_per_key():
  model, shapes, x = _build('vae', (8, 8, 1))
  params = _fill(shapes)
  apply = jax.jit(model.apply)
  a = apply(params, x, jax.random.key(5))
  b = apply(params, x, jax.random.key(5))
  c = apply(params, x, jax.random.key(6))
  np.testing.assert_array_equal(np.asarray(a['z']), np.asarray(b['z']))
  np.testing.assert_array_equal(np.asarray(a['logits']), np.asarray(b['logits']))
  assert float(jnp.max(jnp.abs(a['z'] - c['z']))) > 1e-3
  np.testing.assert_array_equal(np.asarray(a['mean']), np.asarray(c['mean']))  # only the sample differs


@pytest.mark.parametrize('name', models.MODEL_NAMES)
def test_bfloat16_keeps_float32_params_and_outputs(name):
  model, shapes, x = _build(name, (16, 16, 1), dtype=jnp.bfloat16)
  assert _leaves_dtypes(shapes) == {'float32'}  # what the real init creates
  params = _fill(shapes)
  out = jax.jit(model.apply)(params, x, jax.random.key(3))
  assert _leaves_dtypes(out) == {'float32'}
  assert jax.eval_shape(lambda p, x: model.apply(p, x, method=model.encode), params, x).dtype == jnp.float32
  # It really computes in bfloat16: close to, but not bit-identical with, the float32 model.
  model32 = models.make_model(name, (16, 16, 1), _tiny_cfg(name))
  out32 = jax.jit(model32.apply)(params, x, jax.random.key(3))
  key = 'logits' if name == 'vae' else 'recon'
  diff = float(jnp.max(jnp.abs(out[key] - out32[key])))
  scale = float(jnp.max(jnp.abs(out32[key]))) + 1e-6
  assert 0 < diff < 0.1 * scale


def test_salt_and_pepper_amount_and_values():
  x = jnp.full((200, 1000), 0.5)
  noisy = np.asarray(losses.salt_and_pepper(jax.random.key(0), x, 0.2))
  changed = noisy != 0.5
  assert abs(changed.mean() - 0.2) < 0.005
  assert set(np.unique(noisy[changed]).tolist()) <= {0.0, 1.0}
  assert abs((noisy[changed] == 1.0).mean() - 0.5) < 0.02  # half salt, half pepper
  per_image = changed.mean(1)
  assert per_image.std() > 0  # independent per image, not one mask for all
  assert abs(np.asarray(losses.salt_and_pepper(jax.random.key(0), x, 0.05) != 0.5).mean() - 0.05) < 0.005
  np.testing.assert_array_equal(np.asarray(losses.salt_and_pepper(jax.random.key(0), x, 0.0)), np.asarray(x))
  assert noisy.dtype == np.float32 and noisy.shape == x.shape


def test_salt_and_pepper_deterministic_per_key():
  x = jax.random.uniform(jax.random.key(9), (16, 8, 8, 1))
  a = losses.salt_and_pepper(jax.random.key(1), x)
  b = losses.salt_and_pepper(jax.random.key(1), x)
  c = losses.salt_and_pepper(jax.random.key(2), x)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.mean(np.asarray(a) != np.asarray(c)) > 0.1


def test_psnr():
  x = jax.random.uniform(jax.random.key(0), (4, 64))
  assert float(losses.psnr(x, x)) > 100.0
  np.testing.assert_allclose(float(losses.psnr(x + 0.1, x)), 20.0, rtol=1e-4)  # MSE 0.01 -> 20 dB
  assert float(losses.psnr(x + 0.1, x)) > float(losses.psnr(x + 0.2, x))


def test_unknown_names_are_user_errors():
  with pytest.raises(UserError) as e:
    models.make_model('resnet', (8, 8, 1))
  assert 'resnet' in str(e.value) and 'vae' in str(e.value)
  for key, typo, expected in (('activation', 'gelu_typo', ('gelu_typo', 'relu')),
                              ('kernel_init', 'glorot_typo', ('glorot_typo',))):
    cfg = _tiny_cfg('ae')
    cfg[key] = typo
    model = models.make_model('ae', (8, 8, 1), cfg)
    with pytest.raises(UserError) as e:
      jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64)))
    assert all(word in str(e.value) for word in expected), (key, str(e.value))
  bad = config.model_block('nope')
  with pytest.raises(UserError):
    models.make_model(bad.name, (8, 8, 1), bad)


@pytest.mark.parametrize('side', [10, 30])
def test_conv_ae_refuses_sides_it_cannot_give_back(side):
  model = models.make_model('conv_ae', (side, side, 1), _tiny_cfg('conv_ae'))
  with pytest.raises(UserError, match='multiple of 4'):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, 1)))


@pytest.mark.parametrize('strides', [(1, 1), (2, 2)])
@pytest.mark.parametrize('padding', ['SAME', 'VALID', ((2, -1), (0, 1))])
def test_conv_by_matmul_equals_xla_convolution(strides, padding):
  """The CPU's small-map convolution (slices and one matrix product): the outputs and gradients of
  lax.conv_general_dilated, strided or not, with string, explicit and negative padding, on an odd-by-even map."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(5, 3, 3, 4)), jnp.float32)
  xla = lambda x, k: jax.lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours = lambda x, k: models.conv_by_matmul(x, k, strides, padding)
  np.testing.assert_allclose(ours(x, kernel), xla(x, kernel), rtol=0, atol=1e-5)
  grads = [jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))(x, kernel) for f in (ours, xla)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


@pytest.mark.parametrize('kernel_size', [2, 3, 4, 5])
@pytest.mark.parametrize('padding', ['SAME', 'VALID'])
def test_phase_conv_transpose_equals_flax_conv_transpose(kernel_size, padding):
  """conv_ae's decoder computes each stride-2 transposed convolution as four stride-1 convolutions: the same
  parameters, outputs and gradients as nn.ConvTranspose, on a 1x1 map and an odd-by-even one (each shape costs
  seconds of compilation on a CPU)."""
  import flax.linen as nn
  for shape in [(3, 1, 1, 4), (2, 7, 6, 3)]:
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    flax_layer = nn.ConvTranspose(5, (kernel_size, kernel_size), (2, 2), padding=padding)
    # Random parameters of the shapes both layers declare (abstract inits: eager ones compile for seconds).
    shapes = jax.eval_shape(flax_layer.init, jax.random.key(1), x)
    ours = models.PhaseConvTranspose(5, kernel_size, padding=padding)
    assert jax.tree.map(jnp.shape, jax.eval_shape(ours.init, jax.random.key(1), x)) == jax.tree.map(jnp.shape, shapes)
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(2)
    params = jax.tree.unflatten(tree, [jnp.asarray(rng.normal(size=a.shape), jnp.float32) for a in leaves])
    np.testing.assert_allclose(ours.apply(params, x), flax_layer.apply(params, x), rtol=0, atol=1e-5)
    grads = [jax.grad(lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x))), argnums=(0, 1))(params, x)
             for layer in (ours, flax_layer)]
    for a, b in zip(*map(jax.tree.leaves, grads)):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


@pytest.mark.parametrize('output_activation', ['linear', 'sigmoid'])
def test_dense_ae_gives_its_output_logits(output_activation):
  """'logits' is the output layer before its activation (what a Bernoulli likelihood reads); `decode_logits`
  gives the same from the embedding."""
  cfg = config.model_block('ae')
  cfg.dims, cfg.output_activation = (16, 4), output_activation
  model = models.make_model('ae', (8, 8, 1), cfg)
  x = jax.random.uniform(jax.random.key(0), (3, 64))
  params = model.init(jax.random.key(1), x)
  out = model.apply(params, x)
  activation = jax.nn.sigmoid if output_activation == 'sigmoid' else (lambda a: a)
  np.testing.assert_allclose(out['recon'], activation(out['logits']), rtol=1e-6)
  np.testing.assert_allclose(model.apply(params, out['z'], method=model.decode_logits), out['logits'], rtol=1e-6)


def test_bernoulli_reconstruction_is_the_mean_binary_cross_entropy():
  x = jnp.asarray([[0.0, 1.0, 0.25], [1.0, 0.0, 0.5]])
  logits = jnp.asarray([[-3.0, 2.0, 0.0], [40.0, -60.0, 1.0]])  # saturated logits stay finite
  l, t = np.asarray(logits, np.float64), np.asarray(x, np.float64)
  terms = t * np.log1p(np.exp(-l)) + (1 - t) * np.log1p(np.exp(l))  # -log sigmoid(l), -log(1 - sigmoid(l))
  loss, aux = losses.reconstruction_error({'logits': logits, 'recon': jax.nn.sigmoid(logits)}, x, 'bernoulli')
  np.testing.assert_allclose(float(loss), terms.mean(), rtol=1e-5)
  assert set(aux) == {'bce', 'mse'} and float(aux['bce']) == float(loss)

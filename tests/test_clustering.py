"""DEC's clustering math, the method registry, and the clustering loop (learning, custom losses, resume)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax.training import train_state

from udl_jax import checkpoint, clustering, config, dec, methods, metrics, models, parallel, train
from udl_jax.errors import UserError


def _random(seed=0, n=40, k=5, d=6):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, d)), jnp.float32),
          jnp.asarray(rng.normal(scale=2.0, size=(k, d)), jnp.float32))


def _entropy(p):
  p = np.asarray(p, np.float64)
  return float(np.mean(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)))


# ------------------------------------------------------------------------------------------------- the math

@pytest.mark.parametrize('alpha', [1.0, 2.0])
def test_soft_assignment_matches_paper_formula(alpha):
  z, mu = _random(1)
  z64, mu64 = np.asarray(z, np.float64), np.asarray(mu, np.float64)
  sq = ((z64[:, None, :] - mu64[None]) ** 2).sum(-1)
  kernel = (1.0 + sq / alpha) ** (-(alpha + 1.0) / 2.0)
  expected = kernel / kernel.sum(1, keepdims=True)
  q = np.asarray(clustering.soft_assignment(z, mu, alpha))
  assert q.shape == (40, 5)
  np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-7)


def test_alpha_changes_the_kernel():
  z, mu = _random(2)
  q1, q2 = clustering.soft_assignment(z, mu, 1.0), clustering.soft_assignment(z, mu, 2.0)
  assert float(jnp.max(jnp.abs(q1 - q2))) > 1e-3


def test_rows_sum_to_one_and_target_is_sharper():
  z, mu = _random(3)
  q = clustering.soft_assignment(z, mu)
  p = clustering.target_distribution(q)
  np.testing.assert_allclose(np.asarray(q.sum(1)), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(p.sum(1)), 1.0, atol=1e-5)
  assert np.all(np.asarray(p) >= 0) and np.all(np.asarray(q) > 0)
  assert _entropy(p) < _entropy(q) - 0.05
  # P keeps each point's most likely cluster for a clear-cut q (squaring never reorders within a row;
  # only the frequency normalisation can): check against the formula directly.
  q64 = np.asarray(q, np.float64)
  w = q64 ** 2 / q64.sum(0)
  np.testing.assert_allclose(np.asarray(p), w / w.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_kl_divergence_zero_iff_equal():
  z, mu = _random(4)
  q = clustering.soft_assignment(z, mu)
  p = clustering.target_distribution(q)
  assert abs(float(clustering.kl_divergence(p, p))) < 1e-6
  assert abs(float(clustering.kl_divergence(q, q))) < 1e-6
  kl = float(clustering.kl_divergence(p, q))
  assert kl > 1e-3
  p64, q64 = np.asarray(p, np.float64), np.asarray(q, np.float64)
  expected = np.mean(np.sum(np.where(p64 > 0, p64 * np.log(p64 / q64), 0.0), axis=1))
  np.testing.assert_allclose(kl, expected, rtol=1e-4)


def _dec_loss(alpha):
  """DEC's objective as the loop trains it: P is a fixed target (computed outside the gradient)."""
  def loss(z, mu):
    q = clustering.soft_assignment(z, mu, alpha)
    p = jax.lax.stop_gradient(clustering.target_distribution(q))
    return clustering.kl_divergence(p, q)
  return loss


def _degenerate_cases():
  z, mu = _random(5)
  empty = np.asarray(mu).copy()
  empty[0] = 1e6  # a centre far from every point: an empty cluster, f_j ~ 0
  return {
      'identical_z': (jnp.ones_like(z), mu, 1.0),
      'identical_centres': (z, jnp.ones_like(mu), 1.0),
      'everything_identical': (jnp.ones_like(z), jnp.ones_like(mu), 1.0),
      'z_on_a_centre': (jnp.broadcast_to(mu[:1], z.shape), mu, 1.0),
      'z_far_alpha1': (z + 1e6, mu, 1.0),
      # alpha=10: the plain kernel (1 + 1e12/10)^-5.5 ~ 1e-60 underflows float32 for every centre.
      'z_far_alpha10_kernel_underflows': (z + 1e6, mu, 10.0),
      'empty_cluster': (z, jnp.asarray(empty), 1.0),
  }


@pytest.mark.parametrize('case', list(_degenerate_cases()))
def test_degenerate_inputs_stay_finite(case):
  z, mu, alpha = _degenerate_cases()[case]
  q = clustering.soft_assignment(z, mu, alpha)
  p = clustering.target_distribution(q)
  for a in (q, p):
    assert bool(jnp.isfinite(a).all())
    np.testing.assert_allclose(np.asarray(a.sum(1)), 1.0, atol=1e-5)
  loss = _dec_loss(alpha)(z, mu)
  assert bool(jnp.isfinite(loss)) and float(loss) >= -1e-6
  gz, gmu = jax.grad(_dec_loss(alpha), argnums=(0, 1))(z, mu)
  assert bool(jnp.isfinite(gz).all()) and bool(jnp.isfinite(gmu).all())
  if case == 'empty_cluster':  # the far centre gets (almost) no mass, the others share all of it
    assert float(q[:, 0].max()) < 1e-6 and float(p[:, 0].max()) < 1e-6


def test_identical_centres_give_uniform_assignments():
  z, mu = _random(6)
  q = clustering.soft_assignment(z, jnp.zeros_like(mu))
  np.testing.assert_allclose(np.asarray(q), 1.0 / mu.shape[0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(clustering.target_distribution(q)), 1.0 / mu.shape[0], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- registry

def test_registry_builds_dec_and_idec():
  assert {'dec', 'idec'} <= set(methods.names())
  d = methods.get('dec')
  assert d.name == 'dec' and not d.needs_decoder
  i = methods.get('idec', gamma=0.5)
  assert i.name == 'idec' and i.needs_decoder
  # gamma really weighs the clustering term: L = mse + gamma * KL
  z, mu = _random(7)
  q = clustering.soft_assignment(z, mu)
  p = clustering.target_distribution(q)
  x, recon = jnp.zeros((40, 3)), jnp.ones((40, 3))
  kl = float(clustering.kl_divergence(p, q))
  batch = methods.Batch(x=x, z=z, recon=recon, q=q, p=p, centres=mu, state=(), idx=jnp.arange(40), interval=0)
  np.testing.assert_allclose(float(i.loss(batch)), 1.0 + 0.5 * kl, rtol=1e-5)
  np.testing.assert_allclose(float(methods.get('idec').loss(batch)), 1.0 + 0.1 * kl, rtol=1e-5)
  np.testing.assert_allclose(float(d.loss(batch._replace(recon=None))), kl, rtol=1e-6)


def test_registry_errors():
  with pytest.raises(UserError) as e:
    methods.get('decc')
  assert 'decc' in str(e.value) and 'dec' in str(e.value) and 'idec' in str(e.value)
  with pytest.raises(UserError) as e:
    methods.get('idec', gama=0.5)
  assert 'gama' in str(e.value)
  with pytest.raises(UserError):
    methods.get('dec', gamma=0.5)


@pytest.fixture
def toy_method():
  """Registers 'toy_l2' through the public decorator; always unregistered afterwards."""
  assert 'toy_l2' not in methods.names()
  try:
    @methods.register('toy_l2')
    def toy_l2() -> methods.FineTuner:
      return methods.FineTuner('toy_l2', loss=lambda b: jnp.mean((b.p - b.q) ** 2))
    yield 'toy_l2'
  finally:
    methods._FACTORIES.pop('toy_l2', None)


# ------------------------------------------------------------------------------------------ the DEC loop

def _cluster_cfg(method: str = 'dec', **overrides):
  c = config.method_cluster_block(config.cluster_block(), method)
  c.update_interval = 30
  c.kmeans_n_init = 10
  for k, v in overrides.items():
    c[k] = v
  return c


def test_custom_registered_method_trains(pretrained, toy_method):
  """One chunk of training between two target updates lowers the toy loss against that chunk's fixed P.

  (The per-chunk losses in the history are each measured against a newer, sharper P, so they need not fall.)
  """
  model, params, x, y = pretrained
  assert toy_method in methods.names()
  method = methods.get(toy_method)
  before = jax.tree.map(np.array, params)
  init = clustering.kmeans(train.embed(model, params, x), 10, 0, 10)
  q0, _ = dec.predict_on_host(model, {'ae': params, 'centres': init[1]}, x, methods.student_t(1.0))
  p0 = clustering.target_distribution(q0)
  cfg = _cluster_cfg(maxiter=30, tol=0.0, learning_rate=0.1)
  result = dec.run(model, params, x, y, 10, method, cfg, seed=0, init=init)
  assert result.labels.shape == (len(x),) and result.labels.dtype == np.int32
  assert result.q.shape == (len(x), 10) and result.centres.shape == (10, 10)
  assert result.embedding.shape == (len(x), 10) and result.iterations == 30
  assert len(result.history) == 2 and np.isfinite(result.history[0]['loss'])
  loss_before = float(jnp.mean((p0 - q0) ** 2))
  loss_after = float(jnp.mean((p0 - result.q) ** 2))
  assert loss_after < 0.97 * loss_before, (loss_before, loss_after)
  assert np.abs(result.centres - init[1]).max() > 1e-4  # the centres are trained too
  # The caller's autoencoder parameters survive (the training state is donated to the jitted chunks).
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), before)


def test_custom_method_gone_after_fixture():
  assert 'toy_l2' not in methods.names()
  with pytest.raises(UserError):
    methods.get('toy_l2')


@pytest.mark.parametrize('name,margin', [('dec', 0.005), ('idec', 0.03)])
def test_clustering_improves_on_its_kmeans_start(pretrained, name, margin):
  """Seed 0, verified: DEC's NMI dips for ~500 iterations, then climbs past the start (0.722 -> ~0.735 at
  1000 iterations, ~0.77 at 2400); IDEC (Adam 1e-3, its reference optimiser) reaches ~0.785 at 1000.
  (ACC falls for DEC at this scale, 0.786 -> ~0.74; NMI is what the self-training target sharpens.)"""
  model, params, x, y = pretrained
  result = dec.run(model, params, x, y, 10, methods.get(name), _cluster_cfg(name, maxiter=1000), seed=0)
  start = metrics.evaluate(y, result.init_labels)
  final = metrics.evaluate(y, result.labels)
  assert result.labels.shape == result.init_labels.shape == (len(x),)
  assert result.q.shape == (len(x), 10) and result.centres.shape == (10, 10)
  assert result.embedding.shape == (len(x), 10)
  np.testing.assert_allclose(result.q.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(result.labels, result.q.argmax(1))
  assert 0 < result.iterations <= 1000
  assert set(result.params) == {'ae', 'centres'}
  assert result.history[0]['iteration'] == 0
  np.testing.assert_allclose(result.history[0]['nmi'], start['nmi'], atol=1e-6)  # first update = k-means
  np.testing.assert_allclose(result.history[-1]['nmi'], final['nmi'], atol=1e-6)
  assert final['nmi'] > start['nmi'] + margin, (name, start, final)


def test_clustering_resume_after_interruption_matches_uninterrupted(pretrained, tmp_path, monkeypatch):
  model, params, x, y = pretrained
  x, y = x[:600], y[:600]
  # checkpoint_every=1 also covers the final update: it trains nothing, and its save must not collide with
  # the previous save's step.
  cfg = _cluster_cfg(update_interval=20, maxiter=80, tol=0.0, checkpoint_every=1, batch_size=64,
                     kmeans_n_init=2)
  init = clustering.kmeans(train.embed(model, params, x), 10, 0, 2)
  method = methods.get('dec')

  real_save = checkpoint.save
  calls = []

  def counting_save(*args, **kwargs):
    real_save(*args, **kwargs)
    calls.append(args[1])

  monkeypatch.setattr(checkpoint, 'save', counting_save)
  full = dec.run(model, params, x, y, 10, method, cfg, seed=0, ckpt_dir=tmp_path / 'full', init=init)
  saves_uninterrupted = len(calls)
  assert saves_uninterrupted == 5  # 4 training chunks + the final update

  def interrupting_save(*args, **kwargs):
    counting_save(*args, **kwargs)
    if len(calls) == 2:
      raise KeyboardInterrupt  # killed right after the 2nd checkpoint

  calls.clear()
  monkeypatch.setattr(checkpoint, 'save', interrupting_save)
  with pytest.raises(KeyboardInterrupt):
    dec.run(model, params, x, y, 10, method, cfg, seed=0, ckpt_dir=tmp_path / 'cut', init=init)
  monkeypatch.setattr(checkpoint, 'save', counting_save)
  calls.clear()
  resumed = dec.run(model, params, x, y, 10, method, cfg, seed=0, ckpt_dir=tmp_path / 'cut', init=init)
  assert len(calls) == saves_uninterrupted - 2  # it really resumed instead of starting over

  np.testing.assert_array_equal(resumed.labels, full.labels)
  np.testing.assert_allclose(resumed.centres, full.centres, rtol=0, atol=1e-6)
  np.testing.assert_allclose(resumed.q, full.q, rtol=0, atol=1e-6)
  assert resumed.iterations == full.iterations == 80
  assert len(resumed.history) == len(full.history)
  for a, b in zip(resumed.history, full.history):
    assert a['iteration'] == b['iteration']
    np.testing.assert_allclose([a['delta_label'], a['nmi'], a.get('loss', 0.0)],
                               [b['delta_label'], b['nmi'], b.get('loss', 0.0)], rtol=0, atol=1e-6)

  # Running the finished job again returns the same answer without training.
  calls.clear()
  again = dec.run(model, params, x, y, 10, method, cfg, seed=0, ckpt_dir=tmp_path / 'cut', init=init)
  assert calls == []
  np.testing.assert_array_equal(again.labels, full.labels)


@pytest.mark.parametrize('name', ['dec', 'dec_da'])
def test_each_update_interval_trains_on_the_next_batches(pretrained, digits, name):
  """The chunk between two target updates starts at its own step: two chunks of 2 steps equal one of 4, and
  differ from replaying the first 2 steps twice (which would leave most of MNIST-70k untrained, as 140 x 256
  < 70,000). DEC-DA's random moves come from the step, so they too repeat exactly across chunks."""
  model, params, x, _ = pretrained
  mesh = parallel.make_mesh()
  cfg = _cluster_cfg(batch_size=64)
  chunk = dec.make_train_chunk(model, methods.get(name), 1.0, 64, 30, mesh, digits.image_shape, seed=0)
  init = clustering.kmeans(train.embed(model, params, x), 10, 0, 2)
  start = {'ae': params, 'centres': jnp.asarray(init[1])}
  q, _ = dec.predict_on_host(model, start, x, methods.student_t(1.0))
  p = clustering.target_distribution(jnp.asarray(q))
  order = jnp.asarray(np.random.default_rng(0).permutation(len(x)))

  def state():
    tx = train.make_optimizer(cfg)
    return train_state.TrainState.create(apply_fn=None, params=jax.tree.map(jnp.array, start), tx=tx)

  x_dev = jnp.asarray(x)
  (one, _), _ = chunk((state(), ()), x_dev, p, order, 0, 4)
  two, _ = chunk((state(), ()), x_dev, p, order, 0, 2)
  (two, _), _ = chunk(two, x_dev, p, order, 2, 2)
  replay, _ = chunk((state(), ()), x_dev, p, order, 0, 2)
  (replay, _), _ = chunk(replay, x_dev, p, order, 0, 2)
  np.testing.assert_allclose(two.params['centres'], one.params['centres'], rtol=0, atol=1e-6)
  assert np.abs(np.asarray(replay.params['centres']) - np.asarray(one.params['centres'])).max() > 1e-5
  if name == 'dec_da':  # the moves are really applied: DEC on the clean batches ends elsewhere
    clean = dec.make_train_chunk(model, methods.get('dec'), 1.0, 64, 30, mesh)
    (plain, _), _ = clean((state(), ()), x_dev, p, order, 0, 4)
    assert np.abs(np.asarray(plain.params['centres']) - np.asarray(one.params['centres'])).max() > 1e-5


def test_dcec_is_idec_on_the_convolutional_backbone(digits):
  """conv_ae (DCEC's autoencoder, dense embedding) under the dcec method (IDEC's loss on it); on the CPU one
  jitted step per call (`dec._train_steps`)."""
  model_cfg = config.model_block('conv_ae')
  model_cfg.conv_features, model_cfg.dims = (8, 16, 16), (10,)
  model = models.make_model('conv_ae', digits.image_shape, model_cfg)
  x = models.model_input('conv_ae', digits.x[:512])
  assert x.shape == (512, 8, 8, 1)
  params = jax.device_get(model.init(jax.random.key(0), x[:1]))  # pretraining it: test_train.py
  cfg = _cluster_cfg('dcec', maxiter=30, tol=0.0, kmeans_n_init=2, batch_size=64)
  assert cfg.optimizer == 'adam' and cfg.learning_rate == 1e-3  # as DCEC's code compiles it
  init = clustering.kmeans(train.embed(model, params, x), 10, 0, 2)
  result = dec.run(model, params, x, digits.y[:512], 10, methods.get('dcec'), cfg, seed=0, init=init)
  assert result.iterations == 30 and result.embedding.shape == (512, 10) and result.labels.shape == (512,)
  assert all(np.isfinite(h['loss']) for h in result.history if 'loss' in h)
  assert np.abs(result.centres - init[1]).max() > 1e-4  # the centres and the encoder trained
  assert np.abs(jax.tree.leaves(result.params['ae'])[0] - jax.tree.leaves(params)[0]).max() > 1e-5


@pytest.mark.parametrize('batch_order', ['shuffled', 'in_order'])
def test_one_call_per_step_equals_the_scanned_chunk(pretrained, monkeypatch, batch_order):
  """Convolutions on the CPU train one jitted step per call instead of one scan per target update: the same
  steps on the same batches (DEC-keras's in-order walk with its partial batch too), so the same clustering."""
  model, params, x, y = pretrained
  cfg = _cluster_cfg(batch_size=64, update_interval=10, maxiter=40, tol=0.0, batch_order=batch_order)
  init = clustering.kmeans(train.embed(model, params, x), 10, 0, 2)
  scanned = dec.run(model, params, x, y, 10, methods.get('dec'), cfg, seed=0, init=init)
  steps_per_call = []
  original = dec.make_seeds_chunk
  def spy(*args, **kwargs):
    chunk = original(*args, **kwargs)
    def run(*chunk_args):
      steps_per_call.append(chunk_args[-1])
      return chunk(*chunk_args)
    return run
  monkeypatch.setattr(dec, 'make_seeds_chunk', spy)
  monkeypatch.setattr(dec, 'epoch_as_scan', lambda model: False)
  looped = dec.run(model, params, x, y, 10, methods.get('dec'), cfg, seed=0, init=init)
  assert steps_per_call == [1] * 40 and looped.iterations == scanned.iterations == 40
  np.testing.assert_allclose(looped.centres, scanned.centres, rtol=0, atol=1e-5)
  np.testing.assert_allclose([h['loss'] for h in looped.history if 'loss' in h],
                             [h['loss'] for h in scanned.history if 'loss' in h], rtol=1e-5)
  np.testing.assert_array_equal(looped.labels, scanned.labels)
  assert np.abs(scanned.centres - init[1]).max() > 1e-4


@pytest.mark.parametrize('batch_order, visits', [
    # 70 rows, batches of 32: DEC-keras's walk is rows 0-31, 32-63, 64-69, then 0-31 again.
    ('in_order', [np.r_[np.full(32, 2), np.ones(38)], 4]),
    # The default wraps around a fixed permutation: 4 x 32 = 128 visits, rows taken twice where it wrapped.
    ('shuffled', [None, 4]),
])
def test_batch_order_walks_the_rows_as_configured(batch_order, visits):
  """Which rows each step trains on, seen through a method whose state counts the rows of every batch (the hook
  DCN uses). In order with the partial batch (DEC-keras's walk), every row once per pass of 3 steps."""
  n, batch_size = 70, 32
  expected, steps = visits
  model_cfg = config.model_block('ae')
  model_cfg.dims = (8, 2)
  model = models.make_model('ae', (1, 4, 1), model_cfg)
  x = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
  params = train.init_state(model, x, train.make_optimizer(_cluster_cfg()), jax.random.key(0)).params
  counting = methods.FineTuner('count', loss=lambda b: clustering.kl_divergence(b.p, b.q),
                               init_state=lambda labels, centres: jnp.zeros(n),
                               update=lambda counts, centres, z, idx: (counts.at[idx].add(1.0), centres))
  cfg = _cluster_cfg(batch_size=batch_size, update_interval=steps, maxiter=steps, tol=0.0)
  cfg.batch_order = batch_order
  result_counts = []

  original = dec.make_seeds_chunk
  def spy(*args, **kwargs):
    chunk = original(*args, **kwargs)
    def run(carries, *rest):
      carries, loss = chunk(carries, *rest)
      result_counts.append(np.asarray(carries[1])[0])
      return carries, loss
    return run
  init = (np.arange(n) % 2, np.zeros((2, 2), np.float32))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(dec, 'make_seeds_chunk', spy)
    dec.run(model, params, x, None, 2, counting, cfg, seed=0, init=init)
  [counts] = result_counts
  assert counts.sum() == steps * batch_size - (batch_size - n % batch_size) * (batch_order == 'in_order')
  if expected is not None:
    np.testing.assert_array_equal(counts, expected)
  else:
    assert sorted(np.unique(counts)) == [1, 2] and (counts == 2).sum() == steps * batch_size - n

"""The method zoo's maths against small numpy references (DCN, DKM), the embedding clusterers (AE+GMM, N2D),
and every kind of method through the benchmark, including the README's examples as written."""

from __future__ import annotations

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO_ROOT
from test_benchmark import _small_config
from udl_jax import benchmark, methods, results
from udl_jax import config as udl_config
from udl_jax.methods import dcn, dkm, gmm, n2d

_BUILT_IN = methods.names()


def _rng_problem(seed=0, n=32, k=4, d=3):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(k, d)).astype(np.float32), rng


# -------------------------------------------------------------------------------------------------- DCN

def test_dcn_centre_update_equals_the_papers_sequential_rule():
  z, centres, rng = _rng_problem()
  counts = rng.integers(1, 50, size=4).astype(np.float32)
  labels = rng.integers(0, 3, size=32)  # cluster 3 gets no sample: it must not move
  want_c, want_n = centres.astype(np.float64).copy(), counts.astype(np.float64).copy()
  for zi, k in zip(z, labels):  # Yang et al. eq. 8, one sample at a time
    want_n[k] += 1
    want_c[k] -= (want_c[k] - zi) / want_n[k]
  got_c, got_n = dcn.running_average(jnp.asarray(centres), jnp.asarray(counts), jnp.asarray(z), jnp.asarray(labels))
  np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got_n, want_n)
  np.testing.assert_array_equal(got_c[3], centres[3])


def test_dcn_loss_and_its_gradient():
  z, centres, rng = _rng_problem(1)
  x, recon = rng.random((32, 5)).astype(np.float32), rng.random((32, 5)).astype(np.float32)
  labels = rng.integers(0, 4, size=32)
  want = np.mean((recon - x) ** 2) + 0.5 * 0.05 * np.mean(np.sum((z - centres[labels]) ** 2, axis=1))
  loss = lambda c, zz: dcn.dcn_loss(x, recon, zz, c[labels], 0.05)
  np.testing.assert_allclose(float(loss(jnp.asarray(centres), jnp.asarray(z))), want, rtol=1e-5)
  grad_c, grad_z = jax.grad(loss, argnums=(0, 1))(jnp.asarray(centres), jnp.asarray(z))
  np.testing.assert_array_equal(grad_c, 0.0)  # centres move by the running average, not by gradients
  np.testing.assert_allclose(grad_z, 0.05 * (z - centres[labels]) / 32, rtol=1e-4, atol=1e-7)
  assert int(jnp.sum(dcn.nearest(jnp.asarray(z), jnp.asarray(centres)) !=
                     np.argmin(((z[:, None] - centres[None]) ** 2).sum(-1), 1))) == 0


# -------------------------------------------------------------------------------------------------- DKM

def test_dkm_alpha_schedule_is_the_papers():
  alphas = dkm.alpha_schedule()
  assert len(alphas) == 40 and alphas[0] == np.float32(0.1)
  np.testing.assert_allclose(alphas[1], 0.1 * 2 ** (1 / np.log(2) ** 2), rtol=1e-6)
  np.testing.assert_allclose(alphas[39] / alphas[38], 2 ** (1 / np.log(40) ** 2), rtol=1e-5)
  assert np.all(np.diff(alphas) > 0)


def test_dkm_assignment_and_loss_match_numpy():
  z, centres, rng = _rng_problem(2)
  x, recon = rng.random((32, 5)).astype(np.float32), rng.random((32, 5)).astype(np.float32)
  alpha = 3.0
  d = ((z[:, None] - centres[None]) ** 2).sum(-1)
  g = np.exp(-alpha * d) / np.exp(-alpha * d).sum(1, keepdims=True)
  np.testing.assert_allclose(dkm.soft_kmeans(jnp.asarray(z), jnp.asarray(centres), alpha), g, rtol=1e-4, atol=1e-6)
  annealed = methods.get('dkm', weight=0.5, annealing=True)
  q = annealed.assign(jnp.asarray(z), jnp.asarray(centres), 0)  # interval 0: alpha_1 = 0.1
  np.testing.assert_allclose(q, dkm.soft_kmeans(jnp.asarray(z), jnp.asarray(centres), 0.1), rtol=1e-6)
  far = annealed.assign(jnp.asarray(z), jnp.asarray(centres), 10_000)  # past the schedule: its last alpha
  np.testing.assert_allclose(far, dkm.soft_kmeans(jnp.asarray(z), jnp.asarray(centres), dkm.alpha_schedule()[-1]),
                             rtol=1e-5, atol=1e-6)
  pretrained = methods.get('dkm').assign(jnp.asarray(z), jnp.asarray(centres), 3)  # from a pretrained AE: 1000
  np.testing.assert_allclose(pretrained, dkm.soft_kmeans(jnp.asarray(z), jnp.asarray(centres), 1000.0), atol=1e-6)
  batch = methods.Batch(x=x, z=jnp.asarray(z), recon=recon, q=jnp.asarray(g), p=None, centres=jnp.asarray(centres),
                        state=(), idx=jnp.arange(32), interval=0)
  # The authors' reconstruction error: summed over pixels, averaged over the batch.
  want = np.mean(np.sum((recon - x) ** 2, axis=1)) + 0.5 * np.mean(np.sum(g * d, axis=1))
  np.testing.assert_allclose(float(annealed.loss(batch)), want, rtol=1e-5)
  # Far from every centre, the shifted softmax still gives finite rows that sum to 1.
  huge = dkm.soft_kmeans(jnp.asarray(z) * 1e4, jnp.asarray(centres), 1000.0)
  assert np.isfinite(huge).all() and np.allclose(huge.sum(1), 1.0)


# ---------------------------------------------------------------------------------- embedding clusterers

@pytest.fixture(scope='module')
def blobs():
  rng = np.random.default_rng(0)
  centres = rng.normal(scale=8.0, size=(4, 6))
  y = np.repeat(np.arange(4), 100)
  return (centres[y] + rng.normal(size=(400, 6))).astype(np.float32), y


def test_ae_gmm_finds_blobs_and_is_deterministic(blobs):
  z, y = blobs
  labels, q = gmm.fit_gmm(z, 4, seed=0, n_init=2)(z)
  again, _ = gmm.fit_gmm(z, 4, seed=0, n_init=2)(z)
  assert labels.shape == (400,) and q.shape == (400, 4) and np.allclose(q.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(labels, again)
  from udl_jax import metrics
  assert metrics.evaluate(y, labels)['acc'] > 0.99


def test_n2d_pipeline_shapes_and_determinism(blobs):
  z, y = blobs
  predict = n2d.fit_n2d(z, 4, seed=3, n_init=1, n_neighbors=20, min_dist=0.0)
  labels, q = predict(z)
  assert labels.shape == (400,) and q.shape == (400, 4) and np.allclose(q.sum(1), 1.0, atol=1e-5)
  again, _ = n2d.fit_n2d(z, 4, seed=3, n_init=1, n_neighbors=20, min_dist=0.0)(z)
  np.testing.assert_array_equal(labels, again)
  new_labels, _ = predict(z[:50] + 0.01)  # new rows go through UMAP's transform
  assert new_labels.shape == (50,)
  from udl_jax import metrics
  assert metrics.evaluate(y, labels)['acc'] > 0.99


def test_n2d_gmm_n_init_overrides_kmeans_n_init_and_its_default_leaves_old_trials_current(monkeypatch):
  """gmm_n_init=1 (N2D's own code) reaches the GMM in place of k-means' n_init; at its default 0 the method's
  settings equal those recorded before the key existed, so earlier n2d trials are not redone."""
  used = []
  monkeypatch.setattr(n2d, 'fit_n2d', lambda z, k, seed, n_init, *rest: used.append(n_init))
  for gmm_n_init in (1, 0):
    methods.get('n2d', gmm_n_init=gmm_n_init).fit(np.zeros((8, 2)), 2, 0, 20)
  assert used == [1, 20]
  cluster = _small_config().cluster.to_dict()
  assert udl_config.method_settings(cluster, 'n2d')['hyperparameters'] == {'n_neighbors': 20, 'min_dist': 0.0}
  cluster['method_kwargs']['n2d']['gmm_n_init'] = 1
  assert udl_config.method_settings(cluster, 'n2d')['hyperparameters']['gmm_n_init'] == 1


# ------------------------------------------------------------------------------- through the benchmark

def test_every_kind_runs_in_the_benchmark_and_resumes(tmp_path):
  config = _small_config(seeds=1, methods='kmeans,ae_kmeans,ae_gmm,n2d,dcn,dkm',
                         **{'cluster.method_kwargs.n2d.n_neighbors': 10})
  benchmark.run(config, tmp_path)
  rows = {r['method']: r for r in results.read_trials(tmp_path / 'trials.csv')}
  assert list(rows) == ['kmeans', 'ae_kmeans', 'ae_gmm', 'n2d', 'dcn', 'dkm']  # the table's order
  for method in ('dcn', 'dkm'):
    assert rows[method]['iterations'] == 30 and (tmp_path / 'seed_0' / method / 'params').exists()
  for method in ('ae_gmm', 'n2d'):
    saved = np.load(tmp_path / 'seed_0' / f'{method}_labels.npz')
    assert saved['labels'].shape == (1797,) and np.allclose(saved['confidence'] <= 1.0, True)
  # New images: every fine-tuner assigns them with its own assignment; an embedding clusterer says it cannot.
  from udl_jax import assign
  from udl_jax.errors import UserError
  for method in ('dcn', 'dkm'):
    _, labels, confidence = assign.assign(tmp_path, 'digits', method, 0)
    np.testing.assert_array_equal(labels, np.load(tmp_path / 'seed_0' / f'{method}_labels.npz')['labels'])
  with pytest.raises(UserError, match="'n2d' cannot assign new images"):
    assign.assign(tmp_path, 'digits', 'n2d', 0)
  # n2d's UMAP settings changed: only n2d is redone.
  before = rows
  benchmark.run(_small_config(seeds=1, methods='n2d,dcn', **{'cluster.method_kwargs.n2d.n_neighbors': 12}),
                tmp_path)
  after = {r['method']: r for r in results.read_trials(tmp_path / 'trials.csv')}
  assert after['dcn'] == before['dcn'] and after['kmeans'] == before['kmeans']


# ------------------------------------------------------------------------------ learning, resume (digits)

@pytest.fixture(scope='module')
def three_seeds(digits):
  """Three small autoencoders pretrained on digits (seeds 0-2) and their k-means starts."""
  from udl_jax import clustering, config, models, train
  x = models.model_input('ae', digits.x)
  out = []
  for seed in range(3):
    model_cfg = config.model_block('ae')
    model_cfg.dims = (256, 64, 10)
    train_cfg = config.train_block()
    train_cfg.epochs = 50
    model = models.make_model('ae', digits.image_shape, model_cfg)
    state, _ = train.fit('ae', model, model_cfg, train_cfg, x, None, seed=seed)
    params = jax.device_get(state.params)
    out.append((model, params, clustering.kmeans(train.embed(model, params, x), 10, seed, 10)))
  return x, digits.y, out


def _cluster_cfg(name, **overrides):
  from udl_jax import config
  cfg = config.method_cluster_block(config.cluster_block(), name)
  cfg.update_interval, cfg.kmeans_n_init = 30, 10
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


@pytest.mark.parametrize('name', ['dcn', 'dkm'])
def test_fine_tuners_improve_on_their_kmeans_start_for_every_seed(three_seeds, name):
  """Measured here, NMI gains over the k-means start on the three seeds: DCN 0.013-0.022, DKM 0.012-0.023."""
  margin = 0.005
  from udl_jax import dec, metrics
  x, y, runs = three_seeds
  for seed, (model, params, init) in enumerate(runs):
    result = dec.run(model, params, x, y, 10, methods.get(name), _cluster_cfg(name, maxiter=1000), seed, init=init)
    start, final = metrics.evaluate(y, init[0])['nmi'], metrics.evaluate(y, result.labels)['nmi']
    assert final > start + margin, (name, seed, start, final)


def test_dcn_resume_carries_its_state(three_seeds, tmp_path, monkeypatch):
  """Killed after its 2nd checkpoint, DCN resumes its counts, per-sample assignments and centres exactly."""
  from udl_jax import checkpoint, dec
  x, y, runs = three_seeds
  model, params, init = runs[0]
  cfg = _cluster_cfg('dcn', maxiter=120, tol=0.0, checkpoint_every=1)
  full = dec.run(model, params, x, y, 10, methods.get('dcn'), cfg, 0, ckpt_dir=tmp_path / 'full', init=init)
  real_save, saves = checkpoint.save, []

  def interrupting_save(*args, **kwargs):
    real_save(*args, **kwargs)
    saves.append(args[1])
    if len(saves) == 2:
      raise KeyboardInterrupt
  monkeypatch.setattr(checkpoint, 'save', interrupting_save)
  with pytest.raises(KeyboardInterrupt):
    dec.run(model, params, x, y, 10, methods.get('dcn'), cfg, 0, ckpt_dir=tmp_path / 'cut', init=init)
  monkeypatch.setattr(checkpoint, 'save', real_save)
  resumed = dec.run(model, params, x, y, 10, methods.get('dcn'), cfg, 0, ckpt_dir=tmp_path / 'cut', init=init)
  np.testing.assert_array_equal(resumed.labels, full.labels)
  np.testing.assert_allclose(resumed.centres, full.centres, rtol=0, atol=1e-6)
  assert np.abs(full.centres - init[1]).max() > 1e-3  # the running average really moved them


def test_readme_examples_run_as_written(tmp_path, monkeypatch):
  """The README's three example methods (one of each kind), imported and run by its own command's flags."""
  readme = (REPO_ROOT / 'README.md').read_text()
  section = readme.split('## Adding a clustering method', 1)[1]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  command = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
  module = re.search(r'--config.imports=(\S+)', command).group(1)
  wanted = re.search(r'--config.methods=(\S+)', command).group(1)
  (tmp_path / f'{module}.py').write_text(code)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(methods, '_FACTORIES', dict(methods._FACTORIES))
  monkeypatch.delitem(sys.modules, module, raising=False)
  config = _small_config(seeds=1, imports=module, methods=wanted)
  benchmark.run(config, tmp_path / 'run')
  rows = {r['method']: r for r in results.read_trials(tmp_path / 'run' / 'trials.csv')}
  assert set(rows) == set(wanted.split(','))
  assert all(0.0 <= rows[m]['nmi'] <= 1.0 for m in rows)
  _plugin_methods_assign(tmp_path / 'run', module, monkeypatch)


def _plugin_methods_assign(run, module, monkeypatch):
  """`assign` sorts new images with the plugin fine-tuners of a run, importing its config.json `imports`."""
  from udl_jax import assign
  from udl_jax.errors import UserError
  for method in ('dec_l2', 'dec_ema'):
    _, labels, _ = assign.assign(run, 'digits', method, 0)
    np.testing.assert_array_equal(labels, np.load(run / 'seed_0' / f'{method}_labels.npz')['labels'])
  with pytest.raises(UserError, match="'ae_ward' cannot assign") as info:
    assign.assign(run, 'digits', 'ae_ward', 0)
  assert set(str(info.value).split('can assign with: ')[1].split(', ')) == {'ae_kmeans', 'dec', 'idec', 'dec_l2',
                                                                           'dec_ema'}
  with pytest.raises(UserError, match="no finished 'dcn' trial; seed 0 can assign with: ae_kmeans, dec"):
    assign.assign(run, 'digits', 'dcn', 0)
  # A later run without --config.imports wrote config.json: the plugin's module is named to assign instead.
  saved = json.loads((run / 'config.json').read_text())
  (run / 'config.json').write_text(json.dumps({**saved, 'imports': ''}))
  monkeypatch.setattr(methods, '_FACTORIES', {n: f for n, f in methods._FACTORIES.items() if n in _BUILT_IN})
  monkeypatch.delitem(sys.modules, module)
  with pytest.raises(UserError, match="'dec_l2' ran here, but no imported module registers it"):
    assign.assign(run, 'digits', 'dec_l2', 0)
  assign.assign(run, 'digits', 'dec_l2', 0, imports=module)


def test_a_method_that_owns_its_training_plugs_in(tmp_path, monkeypatch):
  """An OwnTrainer gets the seed's data, autoencoder and k-means start; its labels, soft assignments and
  history go where every method's go, and its time is its history's (which a resumed run carries from the
  processes before it). It cannot score held-out images: refused before any work."""
  from udl_jax import clustering
  from udl_jax.errors import UserError
  monkeypatch.setattr(methods, '_FACTORIES', dict(methods._FACTORIES))
  seen = {}

  @methods.register('own_toy')
  def own_toy() -> methods.OwnTrainer:
    def run(seed: methods.Seed):
      seen.update(n=len(seed.x), start=seed.init[0].shape, k=seed.n_clusters)
      labels, _ = clustering.kmeans(seed.x.reshape(len(seed.x), -1), seed.n_clusters, seed.seed, 1)
      return labels, None, [{'step': 0, 'note': 'k-means on pixels', 'seconds': 2.5}, {'step': 1, 'seconds': 4.0}]
    return methods.OwnTrainer('own_toy', run=run)

  benchmark.run(_small_config(seeds=1, methods='ae_kmeans,own_toy'), tmp_path)
  rows = {r['method']: r for r in results.read_trials(tmp_path / 'trials.csv')}
  assert seen == {'n': 1797, 'start': (1797,), 'k': 10} and rows['own_toy']['acc'] > 0.6
  assert rows['own_toy']['seconds'] == 6.5
  assert (tmp_path / 'seed_0' / 'own_toy' / 'metrics.jsonl').exists()
  with pytest.raises(UserError, match='cannot score held-out'):
    benchmark.run(_small_config(seeds=1, methods='own_toy', protocol='holdout'), tmp_path / 'holdout')

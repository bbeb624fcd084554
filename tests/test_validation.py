"""Bad settings are refused before any work, in one line: ranges, combinations, sizes against the data; the
autoencoder launcher refuses changed settings like the benchmark; `assign` uses each method's own alpha."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from configs import autoencoder as autoencoder_config, benchmark as benchmark_config
from test_benchmark import _launcher, _small_config
from udl_jax import assign, autoencoder, benchmark, dec, methods, models, records
from udl_jax import config as udl_config
from udl_jax.errors import UserError

BAD = [
    ({'seeds': 0}, 'seeds must be >= 1'),
    ({'first_seed': -1}, 'first_seed must be >= 0'),
    ({'pretrain.checkpoint_every': 0}, 'pretrain.checkpoint_every must be >= 1'),
    ({'cluster.checkpoint_every': 0}, 'cluster.checkpoint_every must be >= 1'),
    ({'n_clusters': 1}, 'n_clusters must be >= 2'),
    ({'n_clusters': -3}, 'n_clusters must be >= 2'),
    ({'n_clusters': 5000}, 'n_clusters 5000 is more than the 1797 samples'),
    ({'n_clusters': 1500, 'protocol': 'holdout'}, 'n_clusters 1500 is more than the 1258 samples'),
    ({'cluster.kmeans_n_init': 0}, 'kmeans_n_init must be >= 1'),
    ({'cluster.method_kwargs.n2d.gmm_n_init': -1}, 'n2d.gmm_n_init must be >= 0 (0: kmeans_n_init), got -1'),
    ({'image_size': 0}, 'image_size must be >= 2'),
    ({'model.name': 'vae', 'methods': 'kmeans,idec'}, "method 'idec' trains the decoder"),
    ({'pretrain.batch_size': 5000}, 'pretrain.batch_size 5000 is larger than the 1797 training samples'),
    ({'cluster.batch_size': 5000}, 'cluster batch_size 5000 of dec is larger than the 1797 samples'),
    ({'cluster.method_overrides.idec.batch_size': 3000}, 'cluster batch_size 3000 of idec'),
    ({'cluster.method_overrides.idec.checkpoint_every': 0}, 'idec.checkpoint_every must be >= 1'),
    ({'cluster.method_kwargs.idec.gama': 0.1}, "'idec' has no hyperparameter 'gama' (cluster.method_kwargs.idec); it takes: gamma"),
    ({'cluster.batch_order': 'random'}, "cluster.batch_order must be one of shuffled, in_order, got 'random'"),
    ({'model.kernel_init': 'he_normal'}, "unknown model.kernel_init 'he_normal'"),
    ({'model.reconstruction': 'bce'}, "model.reconstruction must be one of mse, bernoulli, got 'bce'"),
    ({'model.reconstruction': 'bernoulli'}, "model.reconstruction=bernoulli reads the logits of a dense "
                                            "autoencoder's sigmoid output"),
    ({'methods': 'kmeans,vade', 'cluster.method_kwargs.vade.likelihood': 'bernoulli'},
     "vade's Bernoulli likelihood reads the decoder's output as logits: pretrain the autoencoder for it"),
    ({'methods': 'kmeans,dcec'}, "method 'dcec' is IDEC on DCEC's convolutional autoencoder: add "
                                 '--config.model.name=conv_ae'),
]


def test_reference_mode_follows_dec_keras_where_it_differs():
  """reference=dec_keras: Keras' glorot_uniform for DEC-keras's Adam presets (its SGD ones keep their
  VarianceScaling), Keras' partial last batch in pretraining, its in-order DEC batches; the default is unchanged."""
  usps, mnist, default = (benchmark_config.get_config(a) for a in
                          ('dataset=usps,reference=dec_keras', 'dataset=mnist,reference=dec_keras', 'dataset=usps'))
  assert (usps.model.kernel_init, usps.pretrain.partial_batch, usps.cluster.batch_order) == \
      ('glorot_uniform', True, 'in_order')
  assert (mnist.model.kernel_init, mnist.pretrain.partial_batch, mnist.reference) == ('dec', True, 'dec_keras')
  assert (default.model.kernel_init, default.pretrain.partial_batch, default.cluster.batch_order) == \
      ('lecun_normal', False, 'shuffled')
  with pytest.raises(UserError, match='unknown reference'):
    benchmark_config.get_config('dataset=usps,reference=dec')


def test_reference_mode_follows_dcec():
  """reference=dcec: DCEC's convolutional autoencoder with Keras' glorot_uniform, 200 epochs of Adam(1e-3) with
  Keras' partial batch on every dataset, updates every 140 steps in order, and its methods; the dataset stays."""
  c = benchmark_config.get_config('dataset=mnist_test,reference=dcec')
  assert (c.model.name, c.model.kernel_init, c.pretrain.epochs, c.pretrain.optimizer, c.pretrain.learning_rate,
          c.pretrain.partial_batch) == ('conv_ae', 'glorot_uniform', 200, 'adam', 1e-3, True)
  assert (c.cluster.update_interval, c.cluster.batch_order, c.methods, c.dataset) == \
      (140, 'in_order', 'kmeans,ae_kmeans,dcec', 'mnist_test')
  with pytest.raises(UserError, match='valid: dec_keras, dcec, vade, n2d'):
    benchmark_config.get_config('dataset=usps,reference=idec')


def test_reference_mode_follows_vades_mnist_recipe():
  """reference=vade: a sigmoid output pretrained on binary cross-entropy (Adam, glorot_uniform, Keras' partial
  batch) and VaDE's Bernoulli likelihood for 3000 epochs; a valid config."""
  c = benchmark_config.get_config('dataset=mnist,reference=vade')
  assert (c.model.name, c.model.output_activation, c.model.reconstruction, c.model.kernel_init) == \
      ('ae', 'sigmoid', 'bernoulli', 'glorot_uniform')
  assert (c.pretrain.epochs, c.pretrain.optimizer, c.pretrain.learning_rate, c.pretrain.partial_batch) == \
      (300, 'adam', 1e-3, True)
  assert (c.cluster.method_kwargs.vade.likelihood, c.cluster.method_kwargs.vade.epochs, c.methods) == \
      ('bernoulli', 3000, 'kmeans,ae_kmeans,ae_gmm,vade')
  udl_config.validate(c)


def test_reference_mode_follows_n2d():
  """reference=n2d: DEC's dense network with Keras' glorot_uniform, 1000 epochs of Adam(1e-3) with Keras' partial
  batch, and the methods up to N2D (UMAP with the paper's 20 neighbours and min_dist 0, one GMM fit as its code)."""
  c = benchmark_config.get_config('dataset=fashion_mnist,reference=n2d')
  assert (c.model.name, c.model.dims, c.model.kernel_init, c.model.reconstruction) == \
      ('ae', (500, 500, 2000, 10), 'glorot_uniform', 'mse')
  assert (c.pretrain.epochs, c.pretrain.optimizer, c.pretrain.learning_rate, c.pretrain.batch_size,
          c.pretrain.partial_batch) == (1000, 'adam', 1e-3, 256, True)
  assert (c.methods, udl_config.method_kwargs(c.cluster, 'n2d')) == \
      ('kmeans,ae_kmeans,ae_gmm,n2d', {'n_neighbors': 20, 'min_dist': 0.0, 'gmm_n_init': 1})
  udl_config.validate(c)


def test_reference_mode_follows_dec_da(tmp_path):
  """reference=dec_da: DEC-DA's dense recipe, 500 augmented epochs of SGD(1, 0.9) with DEC's init and full batches
  only (its fit_generator), then DEC-DA and IDEC-DA with their SGD rates in DEC-keras's in-order loop."""
  c = benchmark_config.get_config('dataset=mnist_test,reference=dec_da')
  assert (c.model.name, c.model.kernel_init, c.model.reconstruction) == ('ae', 'dec', 'mse')
  assert (c.pretrain.epochs, c.pretrain.optimizer, c.pretrain.learning_rate, c.pretrain.batch_size,
          c.pretrain.augment, c.pretrain.partial_batch) == (500, 'sgd', 1.0, 256, True, False)
  assert (c.methods, c.cluster.update_interval, c.cluster.batch_order) == \
      ('kmeans,ae_kmeans,dec_da,idec_da', 30, 'in_order')
  assert [(udl_config.method_cluster_block(c.cluster, m).optimizer,
           udl_config.method_cluster_block(c.cluster, m).learning_rate) for m in ('dec_da', 'idec_da')] == \
      [('sgd', 0.01), ('sgd', 1.0)]
  assert benchmark_config.get_config('dataset=fashion_mnist,reference=dec_da').cluster.update_interval == 140
  udl_config.validate(c)
  assert benchmark.plan(c, tmp_path).splitlines()[-1].endswith('500 epochs (sgd, lr 1.0, augmented batches)')


@pytest.mark.parametrize('change,message', BAD, ids=[str(c) for c, _ in BAD])
def test_bad_settings_refused_before_any_work(change, message, tmp_path, monkeypatch):
  monkeypatch.setattr(benchmark.SeedRun, 'autoencoder', lambda self: pytest.fail('work started'))
  monkeypatch.setattr(benchmark, 'run_trials', lambda *a: pytest.fail('work started'))
  with pytest.raises(UserError) as e:
    benchmark.run(_small_config(**change), tmp_path)
  assert message in str(e.value)
  assert not (tmp_path / 'config.json').exists()  # a refused run leaves no trace that would lock the workdir


def test_launcher_exits_2_with_one_line():
  proc = _launcher('--config=configs/benchmark.py', '--config.seeds=0', '--workdir=/tmp/udl_never_created')
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 2 and err.strip().splitlines()[-1] == 'error: config: seeds must be >= 1, got 0', err


# ----------------------------------------------------------------------------------- autoencoder launcher

def _ae_config(**changes):
  c = autoencoder_config.get_config('model=ae,dataset=digits')
  c.train.epochs, c.model.dims, c.figures = 2, (32, 16, 4), False
  for key, value in changes.items():
    block, name = key.split('.') if '.' in key else (None, key)
    (c[block] if block else c)[name] = value
  return c


def test_a_workdir_saved_by_an_older_udl_jax_resumes():
  """tests/data holds the config.json that commit 046a12f saved for results/mnist_test_zoo. Today's config for
  the same command must resume that workdir: every key added since is in config.ADDED_DEFAULTS at the value
  those runs had (model.conv_features was not, and adding VaDE to that run was refused)."""
  saved = json.loads((Path(__file__).parent / 'data' / 'mnist_test_zoo_config_046a12f.json').read_text())
  now = benchmark_config.get_config('dataset=mnist_test')
  now.methods = saved['methods'] + ',vade'
  assert records.changed_settings(saved, records.as_json(now), benchmark._may_change(now)) == []
  now.model.dims = (500, 500, 10)
  assert records.changed_settings(saved, records.as_json(now), benchmark._may_change(now)) == ['model.dims']


def test_autoencoder_workdir_refuses_changed_settings(tmp_path):
  autoencoder.run(_ae_config(), tmp_path)
  with pytest.raises(UserError, match=r'different settings \(train.learning_rate\)'):
    autoencoder.run(_ae_config(**{'train.learning_rate': 1e-2}), tmp_path)
  with pytest.raises(UserError, match=r'train.epochs'):  # a finished run asked for more epochs
    autoencoder.run(_ae_config(**{'train.epochs': 4}), tmp_path)
  summary = autoencoder.run(_ae_config(figures=True), tmp_path)  # figures change no number: resumes
  assert summary['epochs_run'] == 2 and (tmp_path / 'reconstructions.png').exists()


def test_autoencoder_unfinished_workdir_accepts_new_settings(tmp_path):
  autoencoder.run(_ae_config(), tmp_path)
  shutil.rmtree(tmp_path / 'params')  # as if killed before the end
  summary = autoencoder.run(_ae_config(**{'train.learning_rate': 2e-3}), tmp_path)
  assert summary['epochs_run'] == 2
  assert json.loads((tmp_path / 'config.json').read_text())['train']['learning_rate'] == 2e-3


# ------------------------------------------------------------------------------------------------ assign

@pytest.fixture(scope='module')
def finished_dec(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('assign')
  benchmark.run(_small_config(seeds=1, methods='dec'), workdir)
  return workdir


@pytest.mark.parametrize('where', ['methods.json', 'config.json'])
def test_assign_uses_the_methods_own_alpha(finished_dec, tmp_path, where):
  """The alpha the trial was made with (seed_S/methods.json) wins over config.json, which holds the last
  command's settings; a seed recorded before methods.json existed falls back to config.json's override."""
  workdir = tmp_path / 'run'
  shutil.copytree(finished_dec, workdir)
  if where == 'methods.json':
    recorded = json.loads((workdir / 'seed_0' / 'methods.json').read_text())
    assert recorded['dec']['alpha'] == 1.0
    recorded['dec']['alpha'] = 5.0  # as if made with alpha 5, while config.json says 1
    (workdir / 'seed_0' / 'methods.json').write_text(json.dumps(recorded))
  else:
    (workdir / 'seed_0' / 'methods.json').unlink()
    saved = json.loads((workdir / 'config.json').read_text())
    saved['cluster']['method_overrides']['dec'] = {'alpha': 5.0}
    (workdir / 'config.json').write_text(json.dumps(saved))
  dataset, labels, confidence = assign.assign(workdir, 'digits', 'dec', 0)
  config, params, centres = assign.load_run(workdir, 'dec', 0)
  model = models.from_config(config, dataset.image_shape)
  x = models.model_input('ae', dataset.x)
  q5, _ = dec.predict_on_host(model, {'ae': params, 'centres': centres}, x, methods.student_t(5.0))
  q1, _ = dec.predict_on_host(model, {'ae': params, 'centres': centres}, x, methods.student_t(1.0))
  np.testing.assert_allclose(confidence, q5.max(1), rtol=1e-5)
  assert np.abs(q5.max(1) - q1.max(1)).max() > 1e-3


def test_assign_names_what_is_missing(finished_dec):
  with pytest.raises(UserError) as e:
    assign.assign(finished_dec, 'digits', 'dec', 7)
  assert 'None' not in str(e.value) and 'seed_7' in str(e.value)

"""Seed batching: S seeds trained as one vmapped program give each seed the trials it would have alone.

Batched matmuls round differently from unbatched ones (about 3e-7 on a first forward pass here, as a change of
XLA's thread count does), so a seed in a batch agrees with the same seed alone to float tolerance, and a seed's
result is bitwise independent of which other seeds share its batch (the check that no seed leaks into another).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from udl_jax import checkpoint, clustering, config, dec, methods, metrics, models, train
from udl_jax.seed_batch import keep_inactive, stack, take
from udl_jax.errors import Diverged

SEEDS = [0, 1, 2]


class Killed(Exception):
  """Stands in for a kill between two epochs."""


def _leaves(tree):
  return [np.asarray(a) for a in jax.tree.leaves(tree)]


def _assert_equal(a, b, atol=0.0):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def test_stack_take_and_keep_inactive():
  trees = [{'w': np.full((2,), float(i)), 'b': np.float32(i)} for i in range(3)]
  stacked = stack(trees)
  assert stacked['w'].shape == (3, 2) and stacked['b'].shape == (3,)
  _assert_equal(take(stacked, 1), trees[1])
  moved = keep_inactive(np.array([True, False, True]), jax.tree.map(lambda a: a + 10, stacked), stacked)
  np.testing.assert_array_equal(moved['w'][:, 0], [10, 1, 12])
  np.testing.assert_array_equal(moved['b'], [10, 1, 12])


@pytest.fixture(scope='module')
def setup(digits):
  model_cfg = config.model_block('ae')
  model_cfg.dims = (32, 16, 4)
  train_cfg = config.train_block()
  train_cfg.epochs, train_cfg.batch_size, train_cfg.checkpoint_every, train_cfg.val_fraction = 4, 64, 1, 0.1
  model = models.make_model('ae', digits.image_shape, model_cfg)
  x = models.model_input('ae', digits.x)
  splits = [train.split_train_val(len(x), train_cfg.val_fraction, seed) for seed in SEEDS]
  return model, model_cfg, train_cfg, x, splits


def _fit_seeds(setup, seeds, **kwargs):
  model, model_cfg, train_cfg, x, splits = setup
  return train.fit_seeds('ae', model, model_cfg, train_cfg, x, [splits[s] for s in seeds], seeds, **kwargs)


@pytest.fixture(scope='module')
def batch_of_three(setup):
  return _fit_seeds(setup, SEEDS)


def test_pretraining_each_seed_of_a_batch_equals_it_alone(setup, batch_of_three):
  model, model_cfg, train_cfg, x, splits = setup
  for seed, (state, history) in zip(SEEDS, batch_of_three):
    tr, va = splits[seed]
    alone, alone_history = train.fit('ae', model, model_cfg, train_cfg, x[tr], x[va], seed)
    _assert_equal(state.params, alone.params, atol=1e-5)
    assert [h['epoch'] for h in history] == [h['epoch'] for h in alone_history] == [1, 2, 3, 4]
    for key in ('loss', 'val_loss'):
      np.testing.assert_allclose([h[key] for h in history], [h[key] for h in alone_history], rtol=1e-5)
  # Different seeds really trained differently (not one seed's result three times).
  assert not np.allclose(_leaves(batch_of_three[0][0].params)[0], _leaves(batch_of_three[1][0].params)[0])
  # Bitwise the same in a batch of two: nothing of the other seeds leaks into a seed.
  for seed, (state, _) in zip([2, 0], _fit_seeds(setup, [2, 0])):
    _assert_equal(state.params, batch_of_three[seed][0].params)


def test_pretraining_kill_and_resume_of_a_seed_batch_equals_uninterrupted(setup, batch_of_three, tmp_path):
  dirs = [tmp_path / f'seed_{s}' for s in SEEDS]

  def kill_after_2(epoch, rows):
    assert set(rows) == set(SEEDS)
    if epoch == 2:
      raise Killed
  with pytest.raises(Killed):
    _fit_seeds(setup, SEEDS, ckpt_dirs=dirs, on_epoch=kill_after_2)
  # Seed 1 lost its last checkpoint (killed while saving): it resumes one epoch behind the others, which wait.
  mngr = checkpoint.manager(dirs[1])
  mngr.delete(2)
  mngr.close()
  seen = []
  resumed = _fit_seeds(setup, SEEDS, ckpt_dirs=dirs, on_epoch=lambda epoch, rows: seen.append((epoch, sorted(rows))))
  assert seen == [(2, [1]), (3, SEEDS), (4, SEEDS)]
  for (state, history), (reference, reference_history) in zip(resumed, batch_of_three):
    _assert_equal(state.params, reference.params)
    assert [h['loss'] for h in history] == [h['loss'] for h in reference_history]


@pytest.fixture(scope='module')
def clustering_setup(setup, batch_of_three):
  model, _, _, x, _ = setup
  x, y = x[:600], None
  cfg = config.method_cluster_block(config.cluster_block(), 'dec')
  cfg.update_interval, cfg.maxiter, cfg.tol, cfg.batch_size, cfg.checkpoint_every = 10, 150, 0.012, 64, 1
  params = [state.params for state, _ in batch_of_three]
  inits = [clustering.kmeans(train.embed(model, p, x), 10, seed, 2) for p, seed in zip(params, SEEDS)]
  return model, params, x, cfg, inits


def _run_seeds(clustering_setup, digits, seeds, **kwargs):
  model, params, x, cfg, inits = clustering_setup
  return dec.run_seeds(model, [params[s] for s in seeds], x, None, digits.y[:600], 10, methods.get('dec'), cfg,
                       seeds, inits=[inits[s] for s in seeds], **kwargs)


@pytest.fixture(scope='module')
def clustered(clustering_setup, digits):
  return _run_seeds(clustering_setup, digits, SEEDS)


def test_dec_each_seed_of_a_batch_equals_it_alone_also_when_it_stops_first(clustering_setup, clustered, digits):
  model, params, x, cfg, inits = clustering_setup
  iterations = [r.iterations for r in clustered]
  assert len(set(iterations)) > 1 and min(iterations) < cfg.maxiter, iterations  # one seed stopped first
  y = digits.y[:600]
  for seed, result in zip(SEEDS, clustered):
    alone = dec.run(model, params[seed], x, y, 10, methods.get('dec'), cfg, seed, init=inits[seed])
    assert result.iterations == alone.iterations
    np.testing.assert_array_equal(result.labels, alone.labels)
    np.testing.assert_allclose(result.q, alone.q, rtol=0, atol=1e-5)
    for a, b in zip(result.history, alone.history, strict=True):
      np.testing.assert_allclose([a['nmi'], a['acc'], a['delta_label'], a.get('loss', 0.0)],
                                 [b['nmi'], b['acc'], b['delta_label'], b.get('loss', 0.0)], rtol=0, atol=1e-5)
    assert metrics.evaluate(y, result.labels)['nmi'] == pytest.approx(result.history[-1]['nmi'], abs=1e-6)
  # The seed that stopped first is bitwise the same beside one other seed: a stopped seed does not move.
  first = int(np.argmin(iterations))
  other = next(s for s in SEEDS if s != first)
  pair = _run_seeds(clustering_setup, digits, [first, other])
  np.testing.assert_array_equal(pair[0].q, clustered[first].q)
  _assert_equal(pair[0].params, clustered[first].params)


def test_dec_kill_and_resume_of_a_seed_batch_equals_uninterrupted(clustering_setup, clustered, digits, tmp_path,
                                                                   monkeypatch):
  dirs = [tmp_path / f'seed_{s}' for s in SEEDS]
  real_save, calls = checkpoint.save, []

  def killed_on_the_fifth_save(*args, **kwargs):
    real_save(*args, **kwargs)
    calls.append(args[1])
    if len(calls) == 5:  # mid-way through the second update's saves: the seeds stand at different updates
      raise KeyboardInterrupt
  monkeypatch.setattr(checkpoint, 'save', killed_on_the_fifth_save)
  with pytest.raises(KeyboardInterrupt):
    _run_seeds(clustering_setup, digits, SEEDS, ckpt_dirs=dirs)
  monkeypatch.setattr(checkpoint, 'save', real_save)
  resumed = _run_seeds(clustering_setup, digits, SEEDS, ckpt_dirs=dirs)
  for a, b in zip(resumed, clustered):
    assert a.iterations == b.iterations
    np.testing.assert_array_equal(a.q, b.q)
    assert [h['nmi'] for h in a.history] == [h['nmi'] for h in b.history]


def test_a_seed_that_diverges_stops_alone_and_the_others_go_on(clustering_setup, clustered, digits):
  """Seed 1 starts from non-finite centres: its loss is NaN in its first chunk. It stops there, marked diverged;
  seed 0 beside it gives the result it gives in any batch. Run alone, the divergence is an error."""
  model, params, x, cfg, inits = clustering_setup
  broken = (inits[1][0], np.full_like(inits[1][1], np.nan))
  pair = dec.run_seeds(model, [params[0], params[1]], x, None, digits.y[:600], 10, methods.get('dec'), cfg, [0, 1],
                       inits=[inits[0], broken])
  assert pair[1].diverged_at == 0 and pair[1].history[-1]['diverged'] and pair[1].iterations == 0
  assert pair[0].diverged_at is None and pair[0].iterations == clustered[0].iterations
  np.testing.assert_allclose(pair[0].q, clustered[0].q, rtol=0, atol=1e-5)
  with pytest.raises(Diverged, match=r'from iteration 0 of seed 1 \(lower cluster.learning_rate\)'):
    dec.run(model, params[1], x, None, 10, methods.get('dec'), cfg, 1, init=broken)

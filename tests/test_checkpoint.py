"""Checkpoints: a damaged step falls back to the one before, leftovers of killed saves are cleaned, damaged
parameter trees fail with a clear message."""

from __future__ import annotations

import gc
import shutil
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from udl_jax import checkpoint
from udl_jax.errors import UserError


@pytest.fixture
def no_unraisable(monkeypatch):
  """Fails the test if Python reports 'Exception ignored in ...' (orbax's abandoned read coroutines)."""
  seen = []
  gc.collect()  # what earlier tests left reports now, not during this test
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  yield seen
  gc.collect()
  # Only orbax's abandoned reads: other tests' event loops, closed in orbax's threads, may report at any time.
  assert [u for u in seen if '_read_array_index' in repr(u.object)] == []


def test_the_abandoned_read_filter_drops_only_orbaxs_closed_reads(no_unraisable):
  """The filter stays installed after the read (orbax's threads free the coroutines late) and drops nothing else."""
  def report(cause):
    try:
      raise Exception('Encountered error while reading array index: (slice(0, 64, 1),).') from cause
    except Exception as e:  # noqa: BLE001
      return types.SimpleNamespace(exc_value=e, object=None)
  with checkpoint._quiet_abandoned_reads():
    pass
  sys.unraisablehook(report(GeneratorExit()))
  sys.unraisablehook(report(ValueError('disk')))
  assert [str(u.exc_value.__cause__) for u in no_unraisable] == ['disk']


def _state(offset: float) -> train_state.TrainState:
  """A tiny Dense model's TrainState whose params all differ by `offset` from the base ones."""
  model = nn.Dense(64)
  params = model.init(jax.random.key(0), jnp.ones((1, 64)))
  params = jax.tree.map(lambda p: p + offset, params)
  return train_state.TrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3))


def _save_steps(directory, steps=(1, 2)):
  mngr = checkpoint.manager(directory)
  for step in steps:
    checkpoint.save(mngr, step, _state(step), {'epoch': step})
  mngr.close()


def _truncate_data_file(folder):
  """Halves the largest array data file (TensorStore/OCDBT `d/<hash>`) under `folder`."""
  data = max((p for p in folder.rglob('*') if p.is_file() and p.parent.name == 'd'), key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])


def _assert_params(restored, offset):
  for got, want in zip(jax.tree.leaves(restored.params), jax.tree.leaves(_state(offset).params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.usefixtures('no_unraisable')
def test_damaged_latest_step_falls_back_to_the_previous_one(tmp_path, logged):
  ckpt = tmp_path / 'ckpt'
  _save_steps(ckpt)
  _truncate_data_file(ckpt / '2')
  mngr = checkpoint.manager(ckpt)
  state, meta = checkpoint.restore_latest(mngr, _state(0))
  _assert_params(state, 1)
  assert meta == {'epoch': 1}
  assert len(logged) == 1 and '\n' not in logged[0]
  assert str(ckpt / '2') in logged[0] and 'step 1' in logged[0] and str(tmp_path / 'ckpt.damaged' / '2') in logged[0]
  assert 'OUT_OF_RANGE' in logged[0]  # TensorStore's own reason, not orbax's 60-line wrapper
  assert (tmp_path / 'ckpt.damaged' / '2' / 'state').is_dir() and not (ckpt / '2').exists()
  assert mngr.all_steps() == [1]
  # The run goes on and writes step 2 again, through the same manager.
  checkpoint.save(mngr, 2, _state(20), {'epoch': 2})
  _assert_params(checkpoint.restore_latest(mngr, _state(0))[0], 20)
  mngr.close()
  assert checkpoint.manager(ckpt).all_steps() == [1, 2]
  # Damaged a second time: moved next to the first one, nothing overwritten.
  _truncate_data_file(ckpt / '2')
  state, _ = checkpoint.restore_latest(checkpoint.manager(ckpt), _state(0))
  _assert_params(state, 1)
  assert sorted(p.name for p in (tmp_path / 'ckpt.damaged').iterdir()) == ['2', '2.1']


@pytest.mark.usefixtures('no_unraisable')
def test_no_readable_step_is_a_user_error_and_moves_nothing(tmp_path, logged):
  """Every step failing looks like a changed model or config (or a bad disk): starting afresh would lose the run."""
  ckpt = tmp_path / 'ckpt'
  _save_steps(ckpt)
  for step in ('1', '2'):
    _truncate_data_file(ckpt / step)
  mngr = checkpoint.manager(ckpt)
  with pytest.raises(UserError) as e:
    checkpoint.restore_latest(mngr, _state(0))
  message = str(e.value)
  assert str(ckpt) in message and 'steps 2, 1' in message and 'OUT_OF_RANGE' in message and 'afresh' in message
  assert len(message) < 600
  assert mngr.all_steps() == [1, 2] and not (tmp_path / 'ckpt.damaged').exists() and logged == []


def test_leftover_tmp_dir_of_a_killed_save_is_cleaned_and_resume_works(tmp_path):
  ckpt = tmp_path / 'ckpt'
  _save_steps(ckpt)
  partial = ckpt / '3.orbax-checkpoint-tmp-1723456789012345'
  shutil.copytree(ckpt / '2', partial)
  for junk in partial.rglob('commit_success.txt'):
    junk.unlink()
  _truncate_data_file(partial)
  mngr = checkpoint.manager(ckpt)
  state, meta = checkpoint.restore_latest(mngr, _state(0))
  _assert_params(state, 2)
  assert meta == {'epoch': 2}
  checkpoint.save(mngr, 3, _state(3), {'epoch': 3})
  mngr.close()
  assert not partial.exists()
  assert checkpoint.manager(ckpt).all_steps() == [2, 3]


def test_load_tree_of_a_missing_path_names_it(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    checkpoint.load_tree(tmp_path / 'params')
  assert e.value.filename == str(tmp_path / 'params')


@pytest.mark.usefixtures('no_unraisable')
def test_load_tree_of_a_damaged_tree_is_a_user_error(tmp_path):
  path = tmp_path / 'params'
  checkpoint.save_tree(path, _state(1).params)
  _assert_params(train_state.TrainState.create(apply_fn=None, params=checkpoint.load_tree(path),
                                               tx=optax.adam(1e-3)), 1)
  _truncate_data_file(path)
  with pytest.raises(UserError) as e:
    checkpoint.load_tree(path)
  message = str(e.value)
  assert str(path) in message and 'OUT_OF_RANGE' in message and 'delete it' in message and '\n' not in message

"""The status line: rates that leave out compilation, bounded and estimated ETAs, and where lines go."""

import io
import logging

import pytest

from udl_jax import log, progress


@pytest.fixture
def clock(monkeypatch):
  now = [1000.0]
  monkeypatch.setattr(progress.time, 'monotonic', lambda: now[0])
  monkeypatch.setattr(log, 'is_terminal', lambda: False)
  yield now
  progress.end_run()


def test_rates_leave_out_the_first_step_which_compiles(clock):
  progress.start_run(total_trials=4, done_trials=1)
  progress.start_phase('ae pretraining', total=100, unit='epoch')
  clock[0] += 60.0  # epoch 1: compilation
  progress.advance(1)
  assert progress.phase_eta() == (None, '')
  assert 'ETA after the first steps (1m00s in)' in progress.status_text()
  clock[0] += 10.0  # epochs 2-11: 1 s each
  progress.advance(11)
  assert progress.phase_eta() == (pytest.approx(89.0), '')
  text = progress.status_text()
  assert '1/4 trials' in text and 'epoch 11/100' in text and 'phase 1m29s' in text


def test_a_clustering_phase_is_bounded_until_one_of_its_kind_finished(clock):
  progress.start_run(total_trials=2, done_trials=0)
  for expected in ('<=', '~'):
    progress.start_phase('dec', total=20000, unit='iter', bound=True)
    progress.advance(30)
    clock[0] += 1.0
    progress.advance(60)  # 30 iterations per second
    eta, how = progress.phase_eta()
    assert how == expected
    assert eta == pytest.approx((20000 - 60) / 30 if how == '<=' else (600 - 60) / 30)
    clock[0] += 17.0
    progress.advance(600)
    progress.end_phase()


def test_the_run_eta_adds_the_estimate_of_the_trials_to_come(clock):
  progress.start_run(total_trials=3, done_trials=0)
  progress.set_trial('seed 0 kmeans', rest_seconds=None)
  with progress.phase('k-means'):
    clock[0] += 5.0
    assert 'k-means 0m05s' in progress.status_text() and 'run' not in progress.status_text()
  progress.set_trial('seed 1 kmeans', rest_seconds=120.0)
  assert 'run ~2m00s' in progress.status_text()
  progress.trials_done(2)
  assert progress.status_text().startswith('[' + '#' * 11)  # 2/3 of the 16-character bar


def test_detail_lines_leave_the_terminal_while_a_status_line_shows_but_stay_in_the_log_file(monkeypatch):
  terminal, logfile = io.StringIO(), io.StringIO()
  handler = next(h for h in log.logger.handlers if isinstance(h, log._TerminalHandler))
  monkeypatch.setattr(handler, 'stream', terminal)
  monkeypatch.setattr(log.sys, 'stderr', terminal)
  file_handler = logging.StreamHandler(logfile)
  log.logger.addHandler(file_handler)
  try:
    log.detail('epoch 1 alone')
    progress.start_run(total_trials=1, done_trials=0)
    log.detail('epoch 2 under a status line')
    log.info('trial 1/1 done')
  finally:
    progress.end_run()
    log.logger.removeHandler(file_handler)
  assert 'epoch 1 alone' in terminal.getvalue() and 'epoch 2' not in terminal.getvalue()
  assert 'trial 1/1 done' in terminal.getvalue()
  assert logfile.getvalue().splitlines() == ['epoch 1 alone', 'epoch 2 under a status line', 'trial 1/1 done']

"""How far a run is and how long the rest will take: the status line of a benchmark (`log.status` draws it).

A run is a number of trials; the trial being worked on goes through phases (pretraining epochs, k-means, the
iterations of a clustering method). Rates leave out each phase's first step, which includes compilation. A
clustering phase stops at `tol`, so its length is unknown: its ETA is an upper bound (`<=`, from `maxiter`) until
a trial of the same method has finished in this run, then an estimate from that trial's length (`~`). The run's
ETA adds the caller's estimate of the trials still to come (`set_trial`), known once each kind was timed once.
"""

from __future__ import annotations

import contextlib
import threading
import time

from udl_jax import log

BAR_WIDTH = 16
_run: dict | None = None
_phase: dict | None = None
_lengths: dict[str, list[int]] = {}  # finished bounded phases by kind: how long a clustering method really ran
_ticker: threading.Thread | None = None


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


def start_run(total_trials: int, done_trials: int) -> None:
  """Begins the status line of a run of `total_trials` trials, `done_trials` of them already finished."""
  global _run, _ticker
  _run = {'total': total_trials, 'done': done_trials, 'label': '', 'rest': None}
  _lengths.clear()
  if _ticker is None and log.is_terminal():  # keeps elapsed times moving through phases without steps (k-means)
    _ticker = threading.Thread(target=_tick, daemon=True)
    _ticker.start()
  _render()


def set_trial(label: str, rest_seconds: float | None) -> None:
  """The trial now running, and the estimated seconds of the trials after it (None: not yet known)."""
  if _run is not None:
    _run.update(label=label, rest=rest_seconds)
    _render()


def trials_done(n: int) -> None:
  """`n` of the run's trials are finished (by this process or, sharing the workdir, by others)."""
  if _run is not None:
    _run['done'] = n
    _render()


def end_run() -> None:
  global _run, _phase
  _run = _phase = None
  log.status('')


def start_phase(label: str, total: int | None = None, unit: str = '', bound: bool = False,
                kind: str | None = None) -> None:
  """A phase of `total` `unit`s (None: no steps to count, e.g. k-means). `bound`: `total` is only an upper
  bound (a clustering method's maxiter); phases of the same `kind` that finished earlier give the estimate."""
  global _phase
  _phase = {'label': label, 'total': total, 'unit': unit, 'bound': bound, 'kind': kind or label, 'done': None,
            'first': None, 'last': None, 't0': time.monotonic()}
  _render()


def advance(done: int) -> None:
  """`done` units of the current phase are finished (called after each epoch or chunk, with a host sync)."""
  if _phase is None:
    return
  now = time.monotonic()
  if _phase['first'] is None:
    _phase['first'] = (done, now)  # rates start here: the step before it compiled
  _phase['done'], _phase['last'] = done, (done, now)
  _render()


def end_phase() -> None:
  global _phase
  if _phase is not None and _phase['bound'] and _phase['done'] is not None:
    _lengths.setdefault(_phase['kind'], []).append(_phase['done'])
  _phase = None


def phase_eta() -> tuple[float | None, str]:
  """(seconds left in the phase or None, '' exact / '~' estimated / '<=' upper bound)."""
  p = _phase
  if p is None or p['total'] is None or p['last'] is None or p['last'][0] <= p['first'][0]:
    return None, ''
  rate = (p['last'][0] - p['first'][0]) / (p['last'][1] - p['first'][1])
  total, how = p['total'], ''
  if p['bound']:
    seen = _lengths.get(p['kind'])
    total, how = (min(total, max(p['done'], sum(seen) / len(seen))), '~') if seen else (total, '<=')
  left = max(total - p['done'], 0) / rate - (time.monotonic() - p['last'][1])
  return max(left, 0.0), how


def status_text() -> str:
  if _run is None:
    return ''
  fraction = _run['done'] / max(_run['total'], 1)
  parts = [f"{_run['done']}/{_run['total']} trials"]
  if _run['label']:
    parts.append(_run['label'])
  eta, how = phase_eta()
  p = _phase
  if p is not None:
    if p['total'] is None:
      parts.append(f"{p['label']} {format_duration(time.monotonic() - p['t0'])}")
    else:
      done = p['done'] or 0
      parts.append(f"{p['label']} {p['unit']} {done}/{'<=' if p['bound'] else ''}{p['total']}")
      if not p['bound']:
        fraction += done / p['total'] / max(_run['total'], 1)
      if eta is not None:
        parts.append(f'phase {how}{format_duration(eta)}')
      else:  # the first step compiles (minutes for a convolutional model on a CPU): say that time passes
        parts.append(f"ETA after the first steps ({format_duration(time.monotonic() - p['t0'])} in)")
  if _run['rest'] is not None and how != '<=' and (eta is not None or p is None or p['total'] is None):
    parts.append(f"run ~{format_duration((eta or 0.0) + _run['rest'])}")
  filled = int(round(min(fraction, 1.0) * BAR_WIDTH))
  return '[' + '#' * filled + '.' * (BAR_WIDTH - filled) + '] ' + ' | '.join(parts)


def _render() -> None:
  log.status(status_text())


def _tick() -> None:
  while True:
    time.sleep(1.0)
    if _run is not None:
      _render()


@contextlib.contextmanager
def phase(label: str):
  """A phase without steps to count (k-means, a GMM): the status line shows its elapsed time."""
  start_phase(label)
  try:
    yield
  finally:
    end_phase()

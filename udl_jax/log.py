"""Lines for users, separate from absl's logger (which orbax fills with detail), and the terminal's status line.

Two kinds of line: `info` (trial results, phase changes: the terminal and WORKDIR/log.txt) and `detail` (one per
epoch or target update: log.txt always, the terminal only while no status line is shown). The status line
(`status`, driven by `udl_jax.progress`) is redrawn in place on a terminal below the info lines; when stderr is
not a terminal (a pipe, nohup) it is printed as an ordinary line at most once a minute.
"""

import logging
import shutil
import sys
import threading
import time

logger = logging.getLogger('udl_jax')
_lock = threading.RLock()
_status = {'text': '', 'shown': False, 'last_plain': 0.0}
PLAIN_STATUS_EVERY = 60.0  # seconds between status lines when stderr is not a terminal


def is_terminal() -> bool:
  return sys.stderr.isatty()


class _TerminalHandler(logging.StreamHandler):
  """stderr: info lines above the status line; detail lines only while there is no status line."""

  def emit(self, record):
    if getattr(record, 'detail', False) and _status['text']:
      return
    with _lock:
      _clear()
      super().emit(record)
      _draw()


if not logger.handlers:
  _handler = _TerminalHandler(sys.stderr)
  _handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
  logger.addHandler(_handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False


def info(msg: str, *args) -> None:
  logger.info(msg, *args)


def detail(msg: str, *args) -> None:
  """A per-step line: log.txt always; the terminal only while no status line replaces it."""
  logger.info(msg, *args, extra={'detail': True})


def _clear() -> None:
  if _status['shown']:
    sys.stderr.write('\r\033[K')
    _status['shown'] = False


def _draw() -> None:
  if _status['text'] and is_terminal() and logger.isEnabledFor(logging.INFO):
    width = shutil.get_terminal_size((120, 24)).columns - 1
    sys.stderr.write(_status['text'][:width])
    sys.stderr.flush()
    _status['shown'] = True


def status(text: str) -> None:
  """Shows `text` as the status line ('' removes it). Off a terminal: printed at most once a minute."""
  with _lock:
    _clear()
    _status['text'] = text
    if is_terminal():
      _draw()
    elif text and time.monotonic() - _status['last_plain'] >= PLAIN_STATUS_EVERY \
        and logger.isEnabledFor(logging.INFO):
      _status['last_plain'] = time.monotonic()
      sys.stderr.write(f"{time.strftime('%H:%M:%S')} {text}\n")
      sys.stderr.flush()

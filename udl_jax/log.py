"""Progress lines for users, on stderr, separate from absl's logger (which orbax fills with detail)."""

import logging
import sys

logger = logging.getLogger('udl_jax')
if not logger.handlers:
  _handler = logging.StreamHandler(sys.stderr)
  _handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
  logger.addHandler(_handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False


def info(msg: str, *args) -> None:
  logger.info(msg, *args)

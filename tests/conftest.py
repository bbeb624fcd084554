"""Shared fixtures: where the real benchmark files are (or a visible skip when they are not)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the package is used from the checkout, not installed
  sys.path.insert(0, str(REPO_ROOT))


def _data_root() -> tuple[Path | None, str]:
  """The real-data folder and, when there is none, why."""
  env = os.environ.get('UDL_DATA_DIR')
  if env:
    root = Path(env).expanduser()
    if root.is_dir():
      return root, ''
    return None, f'UDL_DATA_DIR={env} is not a directory'
  fallback = (REPO_ROOT / '..' / 'shared' / 'data').resolve()
  if fallback.is_dir():
    return fallback, ''
  return None, f'real data not available: UDL_DATA_DIR is unset and {fallback} does not exist'


@pytest.fixture(scope='session')
def data_root() -> Path:
  """The folder holding mnist/ and fashion_mnist/ (UDL_DATA_DIR, else ../shared/data), or skip."""
  root, why = _data_root()
  if root is None:
    pytest.skip(why)
  return root


def _family_dir(root: Path, family: str) -> Path:
  folder = root / family
  if not (folder / 'train-images-idx3-ubyte.gz').is_file():
    pytest.skip(f'real data not available: {folder} has no train-images-idx3-ubyte.gz')
  return folder


@pytest.fixture(scope='session')
def mnist_dir(data_root: Path) -> Path:
  return _family_dir(data_root, 'mnist')


@pytest.fixture(scope='session')
def fashion_dir(data_root: Path) -> Path:
  return _family_dir(data_root, 'fashion_mnist')


@pytest.fixture(scope='session')
def digits():
  """scikit-learn's 8x8 digits (1797 images, embedded in the package: no download, always available)."""
  from udl_jax import data
  return data.load('digits')


@pytest.fixture
def logged():
  """The lines `udl_jax.log.info` writes during the test."""
  lines = []
  handler = logging.Handler()
  handler.emit = lambda record: lines.append(record.getMessage())
  logger = logging.getLogger('udl_jax')
  logger.addHandler(handler)
  yield lines
  logger.removeHandler(handler)

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


MAX_WORKERS = 4  # each worker holds JAX and the session's pretrained fixtures (~1 GB)


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pyproject's addopts): one worker per core this process may use, at most MAX_WORKERS. The tests
  are mostly single-threaded, so on 2 cores two workers halve the suite's time."""
  return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """Compiled programs shared between the tests of a session, as the launchers share them between seeds (an
  empty cache per session: no test depends on an earlier run's)."""
  import jax
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('xla_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)
  yield


@pytest.fixture(autouse=True)
def small_embedding_maps(monkeypatch):
  """Every benchmark run of the tests writes its report; a 300-point map keeps t-SNE from dominating them."""
  from udl_jax import report
  monkeypatch.setattr(report, 'MAP_POINTS', 300)


# Every skip for missing data says this, so that the summary can count them.
NO_DATA = 'real data not available'


def _data_root() -> tuple[Path | None, str]:
  """The real-data folder and, when there is none, why."""
  env = os.environ.get('UDL_DATA_DIR')
  if env:
    root = Path(env).expanduser()
    if root.is_dir():
      return root, ''
    return None, f'{NO_DATA}: UDL_DATA_DIR={env} is not a directory'
  fallback = (REPO_ROOT / '..' / 'shared' / 'data').resolve()
  if fallback.is_dir():
    return fallback, ''
  return None, f'{NO_DATA}: UDL_DATA_DIR is unset and {fallback} does not exist'


def pytest_terminal_summary(terminalreporter):
  """One line on how to run the tests that were skipped for want of MNIST / Fashion-MNIST: a skip is easy to miss
  in a green run. It is printed just above pytest's list of skips."""
  skipped = [r for r in terminalreporter.stats.get('skipped', [])
             if isinstance(r.longrepr, tuple) and NO_DATA in str(r.longrepr[2])]
  if skipped:
    terminalreporter.write_line(
        f'{len(skipped)} test(s) skipped without the real MNIST / Fashion-MNIST files: run them with '
        'UDL_DATA_DIR=/path/to/data pytest, where data/ holds mnist/ and fashion_mnist/ (README.md, "Data")',
        yellow=True)


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
    pytest.skip(f'{NO_DATA}: {folder} has no train-images-idx3-ubyte.gz (UDL_DATA_DIR must hold mnist/ and '
                'fashion_mnist/)')
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


@pytest.fixture(scope='session')
def pretrained(digits):
  """A small dense autoencoder pretrained on all of digits: (model, params, x, y). Shared by the DEC-loop and
  VaDE tests."""
  import jax
  from udl_jax import config, models, train
  model_cfg = config.model_block('ae')
  model_cfg.dims = (256, 64, 10)
  train_cfg = config.train_block()
  train_cfg.epochs, train_cfg.batch_size = 50, 256
  model = models.make_model('ae', digits.image_shape, model_cfg)
  x = models.model_input('ae', digits.x)
  state, history = train.fit('ae', model, model_cfg, train_cfg, x, None, seed=0)
  assert history[-1]['loss'] < 0.5 * history[0]['loss']
  return model, jax.device_get(state.params), x, digits.y


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

"""Dataset loading: shapes, ranges, label counts of the real benchmarks, and clear errors for bad input."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from udl_jax import data
from udl_jax.errors import UserError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_ALL_COUNTS = [a + b for a, b in zip(MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS)]


def _check_images(ds: data.Dataset, n: int, shape: tuple[int, int, int]):
  assert len(ds) == n
  assert ds.x.shape == (n, *shape)
  assert ds.x.dtype == np.float32
  assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
  assert ds.x.max() > 0.5  # really scaled to [0, 1], not left as a tiny fraction or all zero


def _counts(y: np.ndarray, k: int = 10) -> list[int]:
  return np.bincount(y, minlength=k).tolist()


def _copy_folder(src: Path, dst: Path) -> Path:
  """Copies file contents only (the shared files are read-only; copies must be writable)."""
  dst.mkdir(parents=True)
  for p in src.iterdir():
    if p.is_file():
      shutil.copyfile(p, dst / p.name)
  return dst


# ------------------------------------------------------------------------------------------------ digits

def test_digits():
  ds = data.load('digits')
  _check_images(ds, 1797, (8, 8, 1))
  assert ds.x.max() == 1.0  # 16/16
  assert ds.y.dtype == np.int32 and ds.y.shape == (1797,)
  assert sorted(np.unique(ds.y).tolist()) == list(range(10))
  assert ds.num_classes == 10
  assert ds.flat.shape == (1797, 64)
  np.testing.assert_array_equal(ds.flat[5], ds.x[5].ravel())
  assert ds.image_shape == (8, 8, 1)


def test_subset_keeps_labels_aligned():
  ds = data.load('digits')
  idx = np.array([10, 3, 7])
  sub = ds.subset(idx, name='small')
  assert sub.name == 'small' and len(sub) == 3
  np.testing.assert_array_equal(sub.x, ds.x[idx])
  np.testing.assert_array_equal(sub.y, ds.y[idx])


# ------------------------------------------------------------------------------------------ real MNIST

def test_mnist_via_data_dir(data_root, mnist_dir):
  ds = data.load('mnist', data_dir=str(data_root))
  _check_images(ds, 70_000, (28, 28, 1))
  assert ds.num_classes == 10
  assert _counts(ds.y) == MNIST_ALL_COUNTS
  assert _counts(ds.y[:60_000]) == MNIST_TRAIN_COUNTS  # train first, then test


def test_mnist_via_family_folder_as_data_dir(mnist_dir):
  ds = data.load('mnist_test', data_dir=str(mnist_dir))
  assert _counts(ds.y) == MNIST_TEST_COUNTS


def test_mnist_via_env(data_root, mnist_dir, monkeypatch):
  monkeypatch.setenv('UDL_DATA_DIR', str(data_root))
  ds = data.load('mnist')
  _check_images(ds, 70_000, (28, 28, 1))
  assert _counts(ds.y) == MNIST_ALL_COUNTS


def test_mnist_test_split(data_root, mnist_dir, monkeypatch):
  monkeypatch.setenv('UDL_DATA_DIR', str(data_root))
  ds = data.load('mnist_test')
  _check_images(ds, 10_000, (28, 28, 1))
  assert _counts(ds.y) == MNIST_TEST_COUNTS


def test_fashion_mnist(data_root, fashion_dir, monkeypatch):
  monkeypatch.setenv('UDL_DATA_DIR', str(data_root))
  ds = data.load('fashion_mnist')
  _check_images(ds, 70_000, (28, 28, 1))
  assert _counts(ds.y) == [7000] * 10
  assert _counts(ds.y[:60_000]) == [6000] * 10


def test_fashion_mnist_test_split(data_root, fashion_dir):
  ds = data.load('fashion_mnist_test', data_dir=str(data_root))
  _check_images(ds, 10_000, (28, 28, 1))
  assert _counts(ds.y) == [1000] * 10


def test_fashion_mnist_debian_folder(fashion_dir, monkeypatch):
  """Without UDL_DATA_DIR, Fashion-MNIST is found in Debian's dataset-fashion-mnist folder."""
  monkeypatch.delenv('UDL_DATA_DIR', raising=False)
  monkeypatch.setattr(data, '_DEBIAN_FASHION', fashion_dir)
  monkeypatch.setattr(data, '_tfds_arrays', _tfds_must_not_run)
  ds = data.load('fashion_mnist_test')
  assert _counts(ds.y) == [1000] * 10


def _tfds_must_not_run(*args, **kwargs):
  raise AssertionError('tfds must not be tried')


# ---------------------------------------------------------------------------------- corrupt / odd files

@pytest.fixture
def mnist_copy(mnist_dir, tmp_path) -> Path:
  return _copy_folder(mnist_dir, tmp_path / 'mnist')


def test_flipped_byte_fails_checksum(mnist_copy):
  path = mnist_copy / 't10k-images-idx3-ubyte.gz'
  raw = bytearray(gzip.decompress(path.read_bytes()))
  raw[16 + 28 * 28 * 5 + 400] ^= 0xFF  # a pixel of image 5; the IDX header stays valid
  path.write_bytes(gzip.compress(bytes(raw)))
  with pytest.raises(UserError) as info:
    data.load('mnist_test', data_dir=str(mnist_copy))
  assert 't10k-images-idx3-ubyte.gz' in str(info.value)
  assert 'checksum' in str(info.value)


def test_truncated_gz(mnist_copy):
  path = mnist_copy / 't10k-images-idx3-ubyte.gz'
  blob = path.read_bytes()
  path.write_bytes(blob[:len(blob) // 2])
  with pytest.raises(UserError, match='t10k-images-idx3-ubyte.gz'):
    data.load('mnist_test', data_dir=str(mnist_copy))


def test_missing_file(mnist_copy):
  (mnist_copy / 't10k-labels-idx1-ubyte.gz').unlink()
  with pytest.raises(UserError, match='t10k-labels-idx1-ubyte'):
    data.load('mnist_test', data_dir=str(mnist_copy))


def test_missing_train_images_is_named(mnist_copy):
  """Three of the four files: a partial set, named as such (it used to read 'not found', and send people
  looking elsewhere)."""
  (mnist_copy / 'train-images-idx3-ubyte.gz').unlink()
  with pytest.raises(UserError) as info:
    data.load('mnist', data_dir=str(mnist_copy))
  assert str(mnist_copy) in str(info.value) and 'train-images-idx3-ubyte' in str(info.value)


def test_regzipped_copy_loads(mnist_dir, mnist_copy):
  for stem in ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'):
    path = mnist_copy / f'{stem}.gz'
    original = path.read_bytes()
    path.write_bytes(gzip.compress(gzip.decompress(original), compresslevel=1, mtime=12345))
    assert path.read_bytes() != original
  ds = data.load('mnist_test', data_dir=str(mnist_copy))
  reference = data.load('mnist_test', data_dir=str(mnist_dir))
  np.testing.assert_array_equal(ds.x, reference.x)
  np.testing.assert_array_equal(ds.y, reference.y)
  assert _counts(ds.y) == MNIST_TEST_COUNTS


def test_uncompressed_idx_loads(mnist_copy):
  for stem in ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'):
    gz = mnist_copy / f'{stem}.gz'
    (mnist_copy / stem).write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
  ds = data.load('mnist_test', data_dir=str(mnist_copy))
  assert _counts(ds.y) == MNIST_TEST_COUNTS


def test_read_idx_bad_magic(tmp_path):
  path = tmp_path / 'x-idx3-ubyte'
  path.write_bytes(b'\x00\x00\x0d\x03' + b'\x00' * 20)  # 0x0d = float, not unsigned bytes
  with pytest.raises(UserError, match='magic'):
    data.read_idx(path)


def test_read_idx_short_body(tmp_path):
  path = tmp_path / 'x-idx1-ubyte'
  path.write_bytes(b'\x00\x00\x08\x01' + (10).to_bytes(4, 'big') + b'\x01' * 7)
  with pytest.raises(UserError, match='truncated'):
    data.read_idx(path)


# ------------------------------------------------------------------------------------ names and lookup

def test_unknown_name_lists_valid_names():
  with pytest.raises(UserError) as info:
    data.load('mnsit')
  msg = str(info.value)
  assert 'mnsit' in msg
  for name in ('digits', 'mnist', 'fashion_mnist', 'usps', 'folder'):
    assert name in msg


def test_nothing_found_says_where_it_looked(tmp_path, monkeypatch):
  monkeypatch.setattr(data, '_tfds_arrays', _tfds_must_not_run)  # data_dir given: tfds is not tried
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(UserError) as info:
    data.load('mnist', data_dir=str(empty))
  msg = str(info.value)
  assert 'Looked in' in msg and str(empty) in msg and str(empty / 'mnist') in msg


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
  """A fresh HOME with no data anywhere, on a machine whose download hosts do not answer; returns HOME."""
  home = tmp_path / 'home'
  home.mkdir()
  monkeypatch.setenv('HOME', str(home))
  for var in ('UDL_DATA_DIR', 'TFDS_DATA_DIR', 'UDL_DOWNLOAD'):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(data, '_DEBIAN_FASHION', tmp_path / 'no-debian')
  monkeypatch.setattr(data, '_online', lambda host, port: False)
  return home


def _tfds_prepared_in(root: Path, family: str) -> None:
  """What a finished tfds download leaves: a version folder with its dataset_info.json."""
  (root / family / '3.0.1').mkdir(parents=True)
  (root / family / '3.0.1' / 'dataset_info.json').write_text('{}')


def test_tfds_mock_data(offline):
  """tfds holds a prepared copy: it is used offline, without asking for a download."""
  tfds = pytest.importorskip('tensorflow_datasets')
  _tfds_prepared_in(offline / 'tensorflow_datasets', 'mnist')
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load('mnist_test')
    both = data.load('mnist')
  assert ds.x.shape == (6, 28, 28, 1)
  assert ds.x.dtype == np.float32
  assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0 and ds.x.max() > 0.5
  assert ds.y.shape == (6,) and ds.y.dtype == np.int32
  assert ds.y.min() >= 0 and ds.y.max() <= 9
  assert len(both) == 12  # train + test, each mocked with 6 examples


def test_tfds_failure_is_user_error(offline, monkeypatch):
  def fails(name, split):
    raise ConnectionError('no network on this machine')

  monkeypatch.setattr(data, '_tfds_arrays', fails)
  with pytest.raises(UserError) as info:
    data.load('mnist_test', download=True)
  msg = str(info.value)
  assert 'Looked in' in msg and 'UDL_DATA_DIR' in msg
  assert 'no network on this machine' in msg  # the tfds reason is passed on


def test_tfds_failure_names_env_folder(tmp_path, offline, monkeypatch):
  monkeypatch.setenv('UDL_DATA_DIR', str(tmp_path))
  monkeypatch.setenv('UDL_DOWNLOAD', '1')
  monkeypatch.setattr(data, '_tfds_arrays', lambda name, split: (_ for _ in ()).throw(OSError('offline')))
  with pytest.raises(UserError) as info:
    data.load('fashion_mnist')
  msg = str(info.value)
  assert str(tmp_path / 'fashion_mnist') in msg and str(tmp_path / 'no-debian') in msg


# ------------------------------------------------------------------------------------------------- USPS

def _usps_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n)
  pixels = np.full((n, 256), -1.0)
  pixels[:, 10:20] = np.round(rng.uniform(-1, 1, (n, 10)), 4)
  pixels[:, 100] = 1.0
  pixels[:, 101] = 0.0
  return labels, pixels


def _write_usps_text(path: Path, labels: np.ndarray, pixels: np.ndarray, bad_line: int | None = None):
  lines = []
  for i, (label, row) in enumerate(zip(labels, pixels)):
    values = row[:199] if i == bad_line else row
    lines.append(' '.join([f'{float(label):.4f}'] + [f'{v:.4f}' for v in values]) + ' \n')
  with gzip.open(path, 'wt') as f:
    f.writelines(lines)


def test_usps_text(tmp_path):
  train_y, train_x = _usps_rows(5, 0)
  test_y, test_x = _usps_rows(3, 1)
  _write_usps_text(tmp_path / 'zip.train.gz', train_y, train_x)
  _write_usps_text(tmp_path / 'zip.test.gz', test_y, test_x)
  ds = data.load('usps', data_dir=str(tmp_path))
  assert ds.x.shape == (8, 16, 16, 1) and ds.x.dtype == np.float32
  assert ds.num_classes == 10
  np.testing.assert_array_equal(ds.y, np.concatenate([train_y, test_y]))
  flat = ds.flat
  assert (flat[:, 0] == 0.0).all()  # -1 (background) -> 0
  assert (flat[:, 100] == 1.0).all()  # 1 -> 1
  assert np.allclose(flat[:, 101], 0.5)
  np.testing.assert_allclose(flat, (np.concatenate([train_x, test_x]) + 1) / 2, atol=1e-6)
  # row-major 16x16: pixel 100 is row 6, column 4
  assert (ds.x[:, 6, 4, 0] == 1.0).all()


def test_usps_text_via_env(tmp_path, monkeypatch):
  folder = tmp_path / 'usps'
  folder.mkdir()
  y, x = _usps_rows(4, 2)
  _write_usps_text(folder / 'zip.train.gz', y, x)
  _write_usps_text(folder / 'zip.test.gz', y, x)
  monkeypatch.setenv('UDL_DATA_DIR', str(tmp_path))
  assert data.load('usps').x.shape == (8, 16, 16, 1)


@pytest.mark.parametrize('bad_line', [0, 2])
def test_usps_text_short_line(tmp_path, bad_line):
  y, x = _usps_rows(4, 0)
  _write_usps_text(tmp_path / 'zip.train.gz', y, x, bad_line=bad_line)
  _write_usps_text(tmp_path / 'zip.test.gz', y, x)
  with pytest.raises(UserError, match='zip.train.gz'):
    data.load('usps', data_dir=str(tmp_path))


def test_usps_text_all_lines_short(tmp_path):
  y, x = _usps_rows(3, 0)
  _write_usps_text(tmp_path / 'zip.train.gz', y, x[:, :199])
  _write_usps_text(tmp_path / 'zip.test.gz', y, x)
  with pytest.raises(UserError, match=r'zip\.train\.gz.*257'):
    data.load('usps', data_dir=str(tmp_path))


def _write_usps_h5(path: Path, parts: dict[str, tuple[np.ndarray, np.ndarray]]):
  h5py = pytest.importorskip('h5py')
  with h5py.File(path, 'w') as f:
    for group, (x, y) in parts.items():
      g = f.create_group(group)
      g.create_dataset('data', data=x)
      g.create_dataset('target', data=y)


def test_usps_h5(tmp_path):
  rng = np.random.default_rng(0)
  train = (rng.uniform(0, 1, (6, 256)), rng.integers(0, 10, 6))
  test = (rng.uniform(0, 1, (4, 256)), rng.integers(0, 10, 4))
  train[0][:, 0], train[0][:, 1] = 0.0, 1.0
  _write_usps_h5(tmp_path / 'usps.h5', {'train': train, 'test': test})
  ds = data.load('usps', data_dir=str(tmp_path))
  assert ds.x.shape == (10, 16, 16, 1) and ds.x.dtype == np.float32
  assert ds.y.dtype == np.int32
  np.testing.assert_array_equal(ds.y, np.concatenate([train[1], test[1]]))
  np.testing.assert_allclose(ds.flat, np.concatenate([train[0], test[0]]), atol=1e-6)
  assert (ds.x[:6, 0, 0, 0] == 0.0).all() and (ds.x[:6, 0, 1, 0] == 1.0).all()


def test_usps_h5_missing_group(tmp_path):
  _write_usps_h5(tmp_path / 'usps.h5', {'train': (np.zeros((2, 256)), np.zeros(2, int))})
  with pytest.raises(UserError, match='usps.h5'):
    data.load('usps', data_dir=str(tmp_path))


def test_usps_not_found(tmp_path):
  with pytest.raises(UserError, match='Looked in'):
    data.load('usps', data_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------ image folder

def _write_images(folder: Path) -> None:
  from PIL import Image
  folder.mkdir(exist_ok=True)
  # written out of order; the loader sorts by name
  Image.new('RGB', (20, 20), (128, 128, 128)).save(folder / 'c.png')
  Image.new('RGB', (30, 25), (255, 255, 255)).save(folder / 'a.png')
  Image.new('L', (10, 10), 0).save(folder / 'b.png')
  (folder / 'notes.txt').write_text('not an image and not picked up')


def test_folder_unlabelled(tmp_path):
  _write_images(tmp_path)
  ds = data.load('folder', data_dir=str(tmp_path), image_size=20)
  assert ds.x.shape == (3, 20, 20, 1) and ds.x.dtype == np.float32
  assert ds.y is None and ds.num_classes is None
  assert ds.ids == ('a.png', 'b.png', 'c.png')
  np.testing.assert_allclose(ds.x[0], 1.0)  # white RGB
  np.testing.assert_allclose(ds.x[1], 0.0)  # black grey
  np.testing.assert_allclose(ds.x[2], 128 / 255, atol=1e-6)  # mid grey RGB


def test_folder_numeric_labels(tmp_path):
  _write_images(tmp_path)
  (tmp_path / 'labels.csv').write_text('filename,label\nc.png,2\na.png,10\nb.png,2\n')
  ds = data.load('folder', data_dir=str(tmp_path), image_size=12, labels_csv=str(tmp_path / 'labels.csv'))
  assert ds.x.shape == (3, 12, 12, 1)  # labels.csv in the folder is not taken for an image
  assert ds.num_classes == 2
  # classes sorted numerically: '2' -> 0, '10' -> 1 (a string sort would swap them)
  np.testing.assert_array_equal(ds.y, [1, 0, 0])


def test_folder_string_labels(tmp_path):
  _write_images(tmp_path)
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text('filename,label\na.png,dog\nb.png,cat\nc.png,dog\nunused.png,bird\n')
  ds = data.load('folder', data_dir=str(tmp_path), image_size=8, labels_csv=str(csv_path))
  assert ds.num_classes == 2
  np.testing.assert_array_equal(ds.y, [1, 0, 1])  # cat -> 0, dog -> 1
  assert ds.y.dtype == np.int32


def test_folder_missing_label(tmp_path):
  _write_images(tmp_path)
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text('filename,label\na.png,1\nc.png,2\n')
  with pytest.raises(UserError, match='b.png'):
    data.load('folder', data_dir=str(tmp_path), labels_csv=str(csv_path))


def test_folder_csv_without_header(tmp_path):
  _write_images(tmp_path)
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text('a.png,1\nb.png,1\nc.png,2\n')
  with pytest.raises(UserError, match='filename,label'):
    data.load('folder', data_dir=str(tmp_path), labels_csv=str(csv_path))


def test_folder_fake_png(tmp_path):
  _write_images(tmp_path)
  (tmp_path / 'broken.png').write_bytes(b'this is not a PNG at all')
  with pytest.raises(UserError, match='broken.png'):
    data.load('folder', data_dir=str(tmp_path))


def test_folder_empty(tmp_path):
  with pytest.raises(UserError, match='no image files'):
    data.load('folder', data_dir=str(tmp_path))


def test_folder_needs_data_dir():
  with pytest.raises(UserError, match='data_dir'):
    data.load('folder')


def test_folder_does_not_exist(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    data.load('folder', data_dir=str(tmp_path / 'nope'))


# ----------------------------------------------------------------------------------------- bad values

def test_nan_images_rejected():
  x = np.zeros((3, 4, 4, 1), np.float32)
  x[1, 2, 2, 0] = np.nan
  with pytest.raises(UserError, match='NaN'):
    data.Dataset(x, np.zeros(3, np.int32), 'bad', 1)


def test_inf_images_rejected():
  x = np.zeros((3, 4, 4, 1), np.float32)
  x[0, 0, 0, 0] = np.inf
  with pytest.raises(UserError, match='infinite'):
    data.Dataset(x, None, 'bad', None)


def test_nan_in_usps_h5_rejected(tmp_path):
  x = np.zeros((3, 256))
  x[1, 7] = np.nan
  _write_usps_h5(tmp_path / 'usps.h5', {'train': (x, np.zeros(3, int)), 'test': (x, np.zeros(3, int))})
  with pytest.raises(UserError, match='NaN'):
    data.load('usps', data_dir=str(tmp_path))


def test_dataset_shape_checks():
  with pytest.raises(UserError, match='N, H, W, C'):
    data.Dataset(np.zeros((3, 4, 4), np.float32), None, 'bad', None)
  with pytest.raises(UserError, match='labels'):
    data.Dataset(np.zeros((3, 4, 4, 1), np.float32), np.zeros(2, np.int32), 'bad', 1)


# ---------------------------------------------------------------------------------------- fixes: depth

def test_folder_16bit_png_keeps_depth(tmp_path):
  """A 16-bit grey PNG is scaled by 65535, not binarised; 8-bit images in the same folder keep their values."""
  from PIL import Image
  Image.fromarray(np.full((20, 20), 32768, np.uint16)).save(tmp_path / 'half.png')
  Image.fromarray(np.tile(np.linspace(0, 65535, 20).astype(np.uint16), (20, 1))).save(tmp_path / 'ramp.png')
  Image.new('L', (20, 20), 128).save(tmp_path / 'grey8.png')
  assert Image.open(tmp_path / 'half.png').mode == 'I;16'
  same = data.load('folder', data_dir=str(tmp_path), image_size=20)
  np.testing.assert_allclose(same.x[1], 32768 / 65535, atol=1e-6)  # sorted: grey8, half, ramp
  np.testing.assert_allclose(same.x[2, 0, :, 0], np.linspace(0, 65535, 20).astype(np.uint16) / 65535, atol=1e-6)
  assert same.x[0].max() == np.float32(128) / np.float32(255.0)  # 8-bit: exactly as before
  small = data.load('folder', data_dir=str(tmp_path), image_size=10)
  assert small.x.shape == (3, 10, 10, 1)
  np.testing.assert_allclose(small.x[1], 0.5, atol=1e-3)
  row = small.x[2, 5, :, 0]
  assert (np.diff(row) > 0).all() and row[0] < 0.1 and row[-1] > 0.9  # still a gradient after resizing


@pytest.mark.parametrize('array, expected', [
    (np.array([[0, 65535], [32768, 0]], np.int32), [[0, 1], [32768 / 65535, 0]]),  # mode 'I'
    (np.array([[0, 1], [0.25, 0]], np.float32), [[0, 1], [0.25, 0]]),  # mode 'F'
])
def test_grey_wide_modes(array, expected):
  from PIL import Image
  np.testing.assert_allclose(data._grey(Image.fromarray(array), 2, Path('x.png')), expected, atol=1e-6)


def test_grey_out_of_range_is_user_error():
  from PIL import Image
  with pytest.raises(UserError, match='x.png'):
    data._grey(Image.fromarray(np.array([[0, 70000]], np.int32)), 2, Path('x.png'))


# ------------------------------------------------------------------------------------- fixes: labels CSV

def _labelled(tmp_path: Path, text: str, **open_args) -> data.Dataset:
  _write_images(tmp_path)
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text(text, **open_args)
  return data.load('folder', data_dir=str(tmp_path), image_size=8, labels_csv=str(csv_path))


def test_csv_integer_labels_compare_as_integers(tmp_path):
  ds = _labelled(tmp_path, 'filename,label\na.png,01\nb.png,1\nc.png,10\n')
  assert ds.num_classes == 2
  np.testing.assert_array_equal(ds.y, [0, 0, 1])


def test_csv_empty_label_refused(tmp_path):
  with pytest.raises(UserError) as info:
    _labelled(tmp_path, 'filename,label\na.png,1\nb.png,\nc.png, \n')
  msg = str(info.value)
  assert 'labels.csv' in msg and 'b.png' in msg and 'c.png' in msg and 'a.png' not in msg


def test_csv_conflicting_duplicate_refused(tmp_path):
  with pytest.raises(UserError) as info:
    _labelled(tmp_path, 'filename,label\na.png,1\nb.png,2\nc.png,1\nb.png,3\n')
  assert 'labels.csv' in str(info.value) and 'b.png' in str(info.value)


def test_csv_identical_duplicate_accepted(tmp_path):
  ds = _labelled(tmp_path, 'filename,label\na.png,1\nb.png,2\nc.png,1\nb.png,2\n')
  np.testing.assert_array_equal(ds.y, [0, 1, 0])


def test_csv_bom_and_spaces(tmp_path):
  text = '\ufefffilename, label\r\n a.png , dog\r\nb.png,cat \r\nc.png,dog\r\n,\r\n'  # BOM, spaces, empty row
  ds = _labelled(tmp_path, text, encoding='utf-8')
  np.testing.assert_array_equal(ds.y, [1, 0, 1])


def test_csv_not_utf8_is_user_error(tmp_path):
  with pytest.raises(UserError, match='labels.csv'):
    _labelled(tmp_path, 'filename,label\na.png,chien\nb.png,ch\xe2t\nc.png,chien\n', encoding='latin-1')


# ------------------------------------------------------------------------------------- fixes: IDX sets

def test_partial_idx_folder_names_missing_files(mnist_copy, monkeypatch):
  """Some IDX files present, others not: say which at once, instead of falling through to tfds."""
  calls = []
  monkeypatch.setattr(data, '_tfds_arrays', lambda *a: calls.append(a))  # data's except would swallow a raise
  monkeypatch.setenv('UDL_DATA_DIR', str(mnist_copy.parent))
  (mnist_copy / 't10k-images-idx3-ubyte.gz').unlink()
  (mnist_copy / 'train-labels-idx1-ubyte.gz').unlink()
  with pytest.raises(UserError) as info:
    data.load('mnist')
  msg = str(info.value)
  assert str(mnist_copy) in msg and 't10k-images-idx3-ubyte' in msg and 'train-labels-idx1-ubyte' in msg
  assert 'train-images' not in msg and 't10k-labels' not in msg
  assert calls == []


# -------------------------------------------------------------------------------------- fixes: tfds note

def test_tfds_failure_keeps_the_whole_first_line(offline, monkeypatch):
  """The cause sits at the end of urllib3's line; a 200-character cut left '(Caused by...'."""
  first = ("HTTPSConnectionPool(host='storage.googleapis.com', port=443): Max retries exceeded with url: "
           "/cvdf-datasets/mnist/t10k-images-idx3-ubyte.gz (Caused by NameResolutionError(\"HTTPSConnection("
           "host='storage.googleapis.com', port=443): Failed to resolve 'storage.googleapis.com' ([Errno -2] Name "
           'or service not known)"))')

  def fails(name, split):
    raise ConnectionError(first + '\nSECOND-LINE details')

  monkeypatch.setattr(data, '_tfds_arrays', fails)
  with pytest.raises(UserError) as info:
    data.load('mnist_test', download=True)
  msg = str(info.value)
  assert f'ConnectionError: {first})' in msg and 'SECOND-LINE' not in msg


def test_runaway_error_line_cut_at_word():
  words = [f'w{i:05d}' for i in range(400)]
  line = data._first_line(' '.join(words) + '\nSECOND-LINE')
  assert line.endswith('...') and len(line) <= 1003
  assert set(line[:-3].split()) <= set(words)  # whole words only


# ------------------------------------------------------------------------- missing data: fail fast, offline

def _tree(root: Path) -> list[Path]:
  return sorted(root.rglob('*'))


@pytest.mark.parametrize('name, family, files', [
    ('mnist_test', 'mnist', ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']),
    ('fashion_mnist', 'fashion_mnist', ['train-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'])])
def test_offline_missing_data_fails_fast_and_creates_nothing(tmp_path, offline, monkeypatch, name, family, files):
  calls = []
  monkeypatch.setattr(data, '_tfds_arrays', lambda *a: calls.append(a))
  before = _tree(tmp_path)
  start = time.monotonic()
  with pytest.raises(UserError) as info:
    data.load(name)
  assert time.monotonic() - start < 10
  assert calls == [] and _tree(tmp_path) == before  # no ~/tensorflow_datasets, nothing else
  msg = str(info.value)
  for part in (f"dataset '{name}'", '$UDL_DATA_DIR', 'not set', str(offline / 'tensorflow_datasets' / family),
               'offline', *files, f'subfolder {family}/', data._MIRRORS[family], 'UDL_DOWNLOAD=1'):
    assert part in msg, part
  assert (str(tmp_path / 'no-debian') in msg) == (family == 'fashion_mnist')
  assert msg.endswith('.') and '\n' not in msg


def test_offline_names_env_and_tfds_dirs(tmp_path, offline, monkeypatch):
  monkeypatch.setenv('UDL_DATA_DIR', str(tmp_path / 'data'))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  with pytest.raises(UserError) as info:
    data.locate('mnist')
  msg = str(info.value)
  assert str(tmp_path / 'data' / 'mnist') in msg and str(tmp_path / 'tfds' / 'mnist') in msg
  assert 'not set' not in msg
  assert not (tmp_path / 'tfds').exists()


def test_locate_finds_without_reading(data_root, mnist_dir, offline, monkeypatch):
  monkeypatch.setenv('UDL_DATA_DIR', str(data_root))
  monkeypatch.setattr(data, 'read_idx', _tfds_must_not_run)
  assert data.locate('mnist') == str(data_root / 'mnist')
  assert data.locate('digits').startswith('embedded')


def test_prepared_tfds_is_located(offline):
  _tfds_prepared_in(offline / 'tensorflow_datasets', 'fashion_mnist')
  assert data.locate('fashion_mnist_test') == 'TensorFlow Datasets'


def test_online_or_forced_download_goes_to_tfds(offline, monkeypatch):
  assert data.locate('mnist', download=True) == 'TensorFlow Datasets'
  monkeypatch.setenv('UDL_DOWNLOAD', 'yes')
  assert data.locate('mnist') == 'TensorFlow Datasets'
  monkeypatch.delenv('UDL_DOWNLOAD')
  monkeypatch.setattr(data, '_online', lambda host, port: host == 'storage.googleapis.com')
  assert data.locate('mnist') == 'TensorFlow Datasets'


def test_download_off_is_refused_even_online(offline, monkeypatch):
  monkeypatch.setattr(data, '_online', lambda host, port: True)
  monkeypatch.setenv('UDL_DOWNLOAD', '0')
  with pytest.raises(UserError, match='downloading is off'):
    data.locate('mnist')
  monkeypatch.delenv('UDL_DOWNLOAD')
  with pytest.raises(UserError, match='downloading is off'):
    data.locate('mnist', download=False)


def test_bad_udl_download_value(offline, monkeypatch):
  monkeypatch.setenv('UDL_DOWNLOAD', 'maybe')
  with pytest.raises(UserError, match='UDL_DOWNLOAD=maybe: use 1'):
    data.locate('mnist')


def test_failed_tfds_removes_the_tree_it_made(offline, monkeypatch):
  root = offline / 'tensorflow_datasets'

  def half_downloads(name, split):
    (root / 'downloads' / name).mkdir(parents=True)
    (root / 'downloads' / name / 'part.gz.tmp').write_bytes(b'')
    raise ConnectionError('gone')

  monkeypatch.setattr(data, '_tfds_arrays', half_downloads)
  with pytest.raises(UserError, match='gone'):
    data.load('mnist_test', download=True)
  assert not root.exists()
  (root / 'kept').mkdir(parents=True)  # a tfds dir that was there before is left alone
  with pytest.raises(UserError):
    data.load('mnist_test', download=True)
  assert (root / 'kept').is_dir()


def test_online_check_is_bounded(monkeypatch):
  """A name lookup can hang past the socket timeout; the check gives up at its own timeout anyway."""
  monkeypatch.setattr(data, '_connects', lambda host, port, timeout: time.sleep(5) or True)
  start = time.monotonic()
  assert data._online('example.org', 443, timeout=0.2) is False
  assert time.monotonic() - start < 2


def test_online_check_unresolvable_host():
  start = time.monotonic()
  assert data._online('udl-jax-test.invalid', 443, timeout=1.0) is False
  assert time.monotonic() - start < 3

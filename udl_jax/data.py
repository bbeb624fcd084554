"""Datasets by name: images as float32 NHWC in [0, 1], integer labels (or None), loaded into memory.

Where files come from, in this order: an explicit `data_dir`; `$UDL_DATA_DIR/<folder>`; for Fashion-MNIST,
Debian's `/usr/share/datasets/fashion-mnist`; then TensorFlow Datasets for the names tfds knows (this is how a
machine with internet gets them). Original files are verified by the SHA-256 of their decompressed bytes, so a
re-gzipped copy (Debian's Fashion-MNIST) passes and a corrupt one fails with the file's name.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from udl_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Images `x` (N, H, W, C) float32 in [0, 1]; labels `y` (N,) int32 or None; optional per-image ids."""
  x: np.ndarray
  y: np.ndarray | None
  name: str
  num_classes: int | None
  ids: tuple[str, ...] | None = None

  def __post_init__(self):
    if self.x.ndim != 4:
      raise UserError(f'{self.name}: images must be (N, H, W, C), got shape {self.x.shape}')
    if self.y is not None and len(self.y) != len(self.x):
      raise UserError(f'{self.name}: {len(self.x)} images but {len(self.y)} labels')
    if not np.isfinite(self.x).all():
      raise UserError(f'{self.name}: images contain NaN or infinite values; clean the data first')

  def __len__(self) -> int:
    return len(self.x)

  @property
  def flat(self) -> np.ndarray:
    """(N, H*W*C) view for dense models."""
    return self.x.reshape(len(self.x), -1)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.x.shape[1:])

  def subset(self, index: np.ndarray, name: str | None = None) -> Dataset:
    return Dataset(self.x[index], None if self.y is None else self.y[index], name or self.name,
                   self.num_classes, None if self.ids is None else tuple(np.asarray(self.ids)[index]))


# ---------------------------------------------------------------------------------------------- IDX (MNIST)

# SHA-256 of the *decompressed* official files (the md5s published with the sets agree with these).
_IDX_SHA256 = {
    'mnist': {
        'train-images-idx3-ubyte': 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
        'train-labels-idx1-ubyte': '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
        't10k-images-idx3-ubyte': '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
        't10k-labels-idx1-ubyte': 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
    },
    'fashion_mnist': {
        'train-images-idx3-ubyte': 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
        'train-labels-idx1-ubyte': 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
        't10k-images-idx3-ubyte': '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
        't10k-labels-idx1-ubyte': '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
    },
}
_DEBIAN_FASHION = Path('/usr/share/datasets/fashion-mnist')


def read_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
  """Reads a (possibly gzipped) IDX file of uint8 data, checking the decompressed bytes' SHA-256."""
  try:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == '.gz' else path.read_bytes()
  except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise UserError(f'{path}: cannot read ({e}); the file is truncated or corrupt: download it again') from e
  if expected_sha256 and hashlib.sha256(raw).hexdigest() != expected_sha256:
    raise UserError(f'{path}: checksum mismatch (SHA-256 of the decompressed bytes is not the official '
                    f'one); the file is corrupt or not the original: download it again')
  if len(raw) < 4 or raw[:2] != b'\0\0' or raw[2] != 0x08:
    raise UserError(f'{path}: not an IDX file of unsigned bytes (bad magic number)')
  ndim = raw[3]
  dims = np.frombuffer(raw, '>u4', count=ndim, offset=4).astype(int)
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(dims)):
    raise UserError(f'{path}: header says shape {tuple(dims)} but holds {data.size} values; truncated file')
  return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
  for candidate in (folder / f'{stem}.gz', folder / stem):
    if candidate.is_file():
      return candidate
  return None


def _load_idx_split(folder: Path, family: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  prefix = 'train' if split == 'train' else 't10k'
  arrays = []
  for kind in ('images-idx3-ubyte', 'labels-idx1-ubyte'):
    stem = f'{prefix}-{kind}'
    path = _find_idx(folder, stem)
    if path is None:
      raise UserError(f'{folder}: {stem}.gz is missing')
    arrays.append(read_idx(path, _IDX_SHA256[family][stem]))
  images, labels = arrays
  if len(images) != len(labels):
    raise UserError(f'{folder}: {len(images)} {split} images but {len(labels)} labels')
  return images, labels


def _idx_folder_ok(folder: Path, splits: tuple[str, ...]) -> bool:
  stems = ['train-images-idx3-ubyte' if s == 'train' else 't10k-images-idx3-ubyte' for s in splits]
  return folder.is_dir() and all(_find_idx(folder, stem) is not None for stem in stems)


def _from_uint8(images: np.ndarray, labels: np.ndarray | None, name: str, num_classes=10) -> Dataset:
  x = (images.astype(np.float32) / 255.0).reshape(len(images), images.shape[1], images.shape[2], -1)
  return Dataset(x, None if labels is None else labels.astype(np.int32), name, num_classes)


def _tfds_arrays(tfds_name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a tfds split through `tfds.data_source` (downloads and prepares it when the machine can)."""
  import tensorflow_datasets as tfds  # heavy import, only on this path
  source = tfds.data_source(tfds_name, split=split)
  try:
    examples = source.__getitems__(range(len(source)))
  except TypeError:  # tfds.testing.mock_data's source mock leaves __getitems__ unbound; index one by one
    examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(e['image']) for e in examples]).astype(np.uint8)
  labels = np.asarray([e['label'] for e in examples], np.int32)
  return images, labels


def _candidate_folders(folder_name: str, data_dir: str | None) -> list[Path]:
  """Where a dataset's files may be, in search order."""
  if data_dir:
    root = Path(data_dir).expanduser()
    return [root, root / folder_name]
  places = []
  if os.environ.get('UDL_DATA_DIR'):
    places.append(Path(os.environ['UDL_DATA_DIR']).expanduser() / folder_name)
  if folder_name == 'fashion_mnist':
    places.append(_DEBIAN_FASHION)
  return places


def _load_idx_family(family: str, name: str, splits: tuple[str, ...], data_dir: str | None) -> Dataset:
  places = _candidate_folders(family, data_dir)
  for folder in places:
    if _idx_folder_ok(folder, splits):
      parts = [_load_idx_split(folder, family, s) for s in splits]
      return _from_uint8(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), name)
  if data_dir is None:
    try:
      parts = [_tfds_arrays(family, s) for s in splits]
      return _from_uint8(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), name)
    except Exception as e:  # noqa: BLE001 - any tfds failure becomes the one clear message below
      tfds_note = f'TensorFlow Datasets could not provide it either ({type(e).__name__}: {str(e)[:200]})'
  else:
    tfds_note = 'TensorFlow Datasets was not tried because data_dir was given explicitly'
  looked = ', '.join(str(p) for p in places) or '(no data_dir and no $UDL_DATA_DIR set)'
  raise UserError(
      f"dataset '{name}': the IDX files (train-images-idx3-ubyte.gz etc.) were not found. Looked in: {looked}. "
      f'{tfds_note}. Put the four original .gz files in $UDL_DATA_DIR/{family}/ or pass data_dir.')


# ---------------------------------------------------------------------------------------------------- USPS

def _read_usps_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """Hastie/Tibshirani/Friedman format: per line a float label, then 256 grey values in [-1, 1]."""
  try:
    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rt') as f:
      rows = np.loadtxt(f, dtype=np.float64, ndmin=2)
  except (OSError, EOFError, ValueError, zlib.error) as e:
    raise UserError(f'{path}: cannot parse as USPS text (label then 256 values a line): {e}') from e
  if rows.shape[1] != 257:
    raise UserError(f'{path}: expected 257 numbers a line (label + 16x16 pixels), found {rows.shape[1]}')
  labels, pixels = rows[:, 0], rows[:, 1:]
  if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() > 9:
    raise UserError(f'{path}: labels must be the digits 0..9')
  if pixels.min() < -1 - 1e-6 or pixels.max() > 1 + 1e-6:
    raise UserError(f'{path}: pixel values must lie in [-1, 1]')
  return ((pixels + 1.0) / 2.0).astype(np.float32), labels.astype(np.int32)


def _read_usps_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """The Kaggle `usps.h5`: groups train/test, each with `data` (N, 256) in [0, 1] and `target` (N,)."""
  import h5py
  try:
    with h5py.File(path, 'r') as f:
      parts = [(np.asarray(f[g]['data'], np.float32), np.asarray(f[g]['target'])) for g in ('train', 'test')]
  except (OSError, KeyError) as e:
    raise UserError(f'{path}: not a USPS HDF5 file with train/test groups holding data and target: {e}') from e
  x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int32)
  if x.ndim != 2 or x.shape[1] != 256 or len(x) != len(y):
    raise UserError(f'{path}: expected data of shape (N, 256) and N targets, got {x.shape} and {y.shape}')
  if x.min() < 0 or x.max() > 1:
    raise UserError(f'{path}: pixel values must lie in [0, 1]')
  return x, y


def _load_usps(name: str, data_dir: str | None) -> Dataset:
  places = _candidate_folders('usps', data_dir)
  for folder in places:
    train, test = folder / 'zip.train.gz', folder / 'zip.test.gz'
    if train.is_file() and test.is_file():
      parts = [_read_usps_text(train), _read_usps_text(test)]
      x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    elif (folder / 'usps.h5').is_file():
      x, y = _read_usps_h5(folder / 'usps.h5')
    else:
      continue
    return Dataset(x.reshape(-1, 16, 16, 1), y, name, 10)
  looked = ', '.join(str(p) for p in places) or '(no data_dir and no $UDL_DATA_DIR set)'
  raise UserError(f"dataset 'usps': neither zip.train.gz + zip.test.gz nor usps.h5 found. Looked in: {looked}. "
                  'Get the files from the Elements of Statistical Learning data page (or Kaggle\'s usps.h5) '
                  'and put them in $UDL_DATA_DIR/usps/.')


# -------------------------------------------------------------------------------------------- image folder

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')


def _read_label_csv(path: Path) -> dict[str, str]:
  try:
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
  except OSError as e:
    raise UserError(f'{path}: cannot read labels: {e}') from e
  if not rows or not {'filename', 'label'} <= set(rows[0]):
    raise UserError(f'{path}: a labels CSV needs a header with the columns filename,label')
  return {r['filename']: r['label'] for r in rows}


def load_folder(folder: str | Path, image_size: int = 28, labels_csv: str | Path | None = None,
                name: str = 'folder') -> Dataset:
  """Every image file in `folder` (sorted), as grey `image_size` squares; labels from a filename,label CSV."""
  from PIL import Image, UnidentifiedImageError
  folder = Path(folder).expanduser()
  if not folder.is_dir():
    raise UserError(f'image folder {folder} does not exist')
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise UserError(f'{folder}: no image files ({", ".join(IMAGE_SUFFIXES)})')
  images = []
  for p in files:
    try:
      with Image.open(p) as im:
        images.append(np.asarray(im.convert('L').resize((image_size, image_size), Image.BILINEAR)))
    except (OSError, UnidentifiedImageError) as e:
      raise UserError(f'{p}: not a readable image: {e}') from e
  x = np.stack(images).astype(np.float32)[..., None] / 255.0
  y, num_classes = None, None
  if labels_csv is not None:
    by_name = _read_label_csv(Path(labels_csv))
    missing = [p.name for p in files if p.name not in by_name]
    if missing:
      raise UserError(f'{labels_csv}: no label for {len(missing)} images, e.g. {missing[:3]}')
    raw = [by_name[p.name] for p in files]
    numeric = all(r.lstrip('-').isdigit() for r in raw)
    classes = sorted(set(raw), key=int if numeric else str)
    y = np.asarray([classes.index(r) for r in raw], np.int32)
    num_classes = len(classes)
  return Dataset(x, y, name, num_classes, tuple(p.name for p in files))


# ------------------------------------------------------------------------------------------------ registry

def _digits(data_dir=None) -> Dataset:
  from sklearn.datasets import load_digits
  d = load_digits()
  return Dataset((d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int32), 'digits', 10)


_LOADERS: dict[str, Callable[[str | None], Dataset]] = {
    'digits': _digits,
    'mnist': lambda data_dir=None: _load_idx_family('mnist', 'mnist', ('train', 'test'), data_dir),
    'mnist_test': lambda data_dir=None: _load_idx_family('mnist', 'mnist_test', ('test',), data_dir),
    'fashion_mnist': lambda data_dir=None: _load_idx_family(
        'fashion_mnist', 'fashion_mnist', ('train', 'test'), data_dir),
    'fashion_mnist_test': lambda data_dir=None: _load_idx_family(
        'fashion_mnist', 'fashion_mnist_test', ('test',), data_dir),
    'usps': lambda data_dir=None: _load_usps('usps', data_dir),
}
NAMES = tuple(_LOADERS) + ('folder',)


def load(name: str, data_dir: str | None = None, *, image_size: int = 28,
         labels_csv: str | None = None) -> Dataset:
  """Loads a dataset by name (see NAMES); `folder` needs `data_dir`, the folder of images."""
  if name == 'folder':
    if not data_dir:
      raise UserError("dataset 'folder' needs data_dir: the folder that holds the images")
    return load_folder(data_dir, image_size, labels_csv)
  if name not in _LOADERS:
    raise UserError(f"unknown dataset '{name}'; valid names: {', '.join(NAMES)}")
  return _LOADERS[name](data_dir)

"""Datasets by name: images as float32 NHWC in [0, 1], integer labels (or None), loaded into memory.

Where files come from, in this order: an explicit `data_dir`; `$UDL_DATA_DIR/<folder>`; for Fashion-MNIST,
Debian's `/usr/share/datasets/fashion-mnist`; then TensorFlow Datasets for the names tfds knows, but only when
tfds already holds the prepared set, or downloading is allowed (`download=True` / `UDL_DOWNLOAD=1`), or the
download host answers within 2 s. Offline, tfds would retry for minutes and then fail; here a missing set fails
at once, creating nothing, with every place looked at and what to do. Original files are verified by the SHA-256
of their decompressed bytes, so a re-gzipped copy (Debian's Fashion-MNIST) passes and a corrupt one fails with
the file's name.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import os
import re
import shutil
import socket
import threading
import zlib
from pathlib import Path

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


def _idx_stems(split: str) -> tuple[str, str]:
  prefix = 'train' if split == 'train' else 't10k'
  return f'{prefix}-images-idx3-ubyte', f'{prefix}-labels-idx1-ubyte'


def _load_idx_split(folder: Path, family: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  images, labels = (read_idx(_find_idx(folder, stem), _IDX_SHA256[family][stem]) for stem in _idx_stems(split))
  if len(images) != len(labels):
    raise UserError(f'{folder}: {len(images)} {split} images but {len(labels)} labels')
  return images, labels


def _idx_folder_ok(folder: Path, splits: tuple[str, ...]) -> bool:
  """Whether `folder` holds every IDX file of `splits`; False when it holds none.

  A partial set is refused here, at once: falling through to tfds would stall offline and then blame the
  wrong place, and another folder's copy would hide the user's mistake.
  """
  stems = [stem for split in splits for stem in _idx_stems(split)]
  missing = [stem for stem in stems if _find_idx(folder, stem) is None]
  if missing and len(missing) < len(stems):
    raise UserError(f'{folder}: holds some IDX files but not {", ".join(f"{m}.gz" for m in missing)}; '
                    'put the missing files there (from the same download as the others) or remove the rest')
  return not missing


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


def _first_line(text: str, limit: int = 1000) -> str:
  """The first line of an error, whole: the cause sits at its end ('... (Caused by NameResolutionError(...))'),
  which a short cut lost. Only a runaway line is cut, at a word."""
  line = text.strip().split('\n', 1)[0]
  if len(line) <= limit:
    return line
  space = line.rfind(' ', limit // 2, limit)
  return line[:space if space > 0 else limit].rstrip() + '...'


# The host tfds downloads each family from (its own URLs); the connectivity check knocks on the same door.
_DOWNLOAD_HOSTS = {'mnist': ('storage.googleapis.com', 443),
                   'fashion_mnist': ('fashion-mnist.s3-website.eu-central-1.amazonaws.com', 80)}
# Public copies of the original IDX files, named in the not-found error.
_MIRRORS = {'mnist': 'https://storage.googleapis.com/cvdf-datasets/mnist/',
            'fashion_mnist': 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'}
_ONLINE_TIMEOUT_S = 2.0


def _tfds_data_dir() -> Path:
  """tfds's data dir as tfds reads it (TFDS_DATA_DIR, else ~/tensorflow_datasets), without importing tfds."""
  return Path(os.environ.get('TFDS_DATA_DIR') or Path.home() / 'tensorflow_datasets').expanduser()


def _tfds_prepared(family: str) -> bool:
  """Whether tfds already holds a prepared `family` (a version folder with its dataset_info.json)."""
  return any(_tfds_data_dir().glob(f'{family}/*/dataset_info.json'))


def _connects(host: str, port: int, timeout: float) -> bool:
  try:
    socket.create_connection((host, port), timeout=timeout).close()
    return True
  except OSError:
    return False


def _online(host: str, port: int, timeout: float = _ONLINE_TIMEOUT_S) -> bool:
  """Whether `host:port` takes a TCP connection within `timeout` s. The probe runs in a thread because the
  socket timeout does not bound the name lookup, which can hang far longer on a machine without a network."""
  answer: list[bool] = []
  probe = threading.Thread(target=lambda: answer.append(_connects(host, port, timeout)), daemon=True)
  probe.start()
  probe.join(timeout)
  return bool(answer and answer[0])


def _download_wanted(download: bool | None) -> bool | None:
  """`download` when given, else $UDL_DOWNLOAD (1/true/yes, 0/false/no); None: download only when online."""
  if download is not None:
    return bool(download)
  value = os.environ.get('UDL_DOWNLOAD', '').strip().lower()
  choices = {'': None, 'auto': None, '1': True, 'true': True, 'yes': True, '0': False, 'false': False, 'no': False}
  if value not in choices:
    raise UserError(f'UDL_DOWNLOAD={value}: use 1 (let TensorFlow Datasets download), 0 (never download) '
                    'or leave it unset (download when the download host answers)')
  return choices[value]


def _tfds_refusal(family: str, download: bool | None) -> str | None:
  """Why tfds is not asked for `family`, or None to ask it: it is asked when it holds the prepared set, when a
  download was asked for, or when its download host answers. Offline it would retry for minutes, then fail."""
  if _tfds_prepared(family):
    return None
  wanted = _download_wanted(download)
  if wanted is False:
    return 'no prepared copy, and downloading is off (download=False or UDL_DOWNLOAD=0)'
  host, port = _DOWNLOAD_HOSTS[family]
  if wanted or _online(host, port):
    return None
  return (f'no prepared copy, and no download tried: {host} did not answer within {_ONLINE_TIMEOUT_S:g} s, '
          'so this machine looks offline')


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


def _looked_in(folder_name: str, data_dir: str | None) -> list[str]:
  """The folders searched, for an error; an unset $UDL_DATA_DIR is named too, as it is the usual fix."""
  looked = [str(p) for p in _candidate_folders(folder_name, data_dir)]
  if not data_dir and not os.environ.get('UDL_DATA_DIR'):
    looked.insert(0, f'$UDL_DATA_DIR/{folder_name} (UDL_DATA_DIR is not set)')
  return looked


# name -> (family: the folder and tfds name, splits in the order they are concatenated)
_IDX_SETS = {'mnist': ('mnist', ('train', 'test')), 'mnist_test': ('mnist', ('test',)),
             'fashion_mnist': ('fashion_mnist', ('train', 'test')),
             'fashion_mnist_test': ('fashion_mnist', ('test',))}


def _idx_not_found(name: str, data_dir: str | None, tfds_note: str) -> UserError:
  """The one not-found error: the set, every place looked at, the files wanted, where to get them, what to do."""
  family, splits = _IDX_SETS[name]
  looked = _looked_in(family, data_dir)
  if not data_dir:
    looked.append(f'{_tfds_data_dir() / family} (TensorFlow Datasets: {tfds_note})')
  names = [f'{stem}.gz' for split in splits for stem in _idx_stems(split)]
  files = ' and '.join(names) if len(names) < 3 else f'{", ".join(names[:-1])} and {names[-1]}'
  where = (f'put {files} in {Path(data_dir).expanduser() / family} or in {data_dir} itself' if data_dir
           else f'set UDL_DATA_DIR to a folder whose subfolder {family}/ holds {files}')
  download = '' if data_dir else ('; or let TensorFlow Datasets download it on a machine with internet '
                                  '(UDL_DOWNLOAD=1 makes it try even when the check says offline)')
  explicit = ' (TensorFlow Datasets is not tried when data_dir is given)' if data_dir else ''
  return UserError(f"dataset '{name}' not found. Looked in: {'; '.join(looked)}{explicit}. To fix: {where} "
                   f'(the original IDX files, e.g. from {_MIRRORS[family]}){download}.')


def _idx_source(name: str, data_dir: str | None, download: bool | None) -> Path | None:
  """The folder holding `name`'s IDX files, or None when tfds is to provide them; when neither can, raises the
  not-found error at once, having read and created nothing."""
  family, splits = _IDX_SETS[name]
  for folder in _candidate_folders(family, data_dir):
    if _idx_folder_ok(folder, splits):
      return folder
  refusal = None if data_dir else _tfds_refusal(family, download)
  if data_dir or refusal:
    raise _idx_not_found(name, data_dir, refusal or '')
  return None


def _tfds_parts(family: str, splits: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
  """`splits` from tfds. A failed attempt removes the tfds data dir when it made it: it leaves a tree of empty
  partial downloads behind."""
  root = _tfds_data_dir()
  existed = root.exists()
  try:
    return [_tfds_arrays(family, s) for s in splits]
  except BaseException:
    if not existed:
      shutil.rmtree(root, ignore_errors=True)
    raise


def _load_idx_family(name: str, data_dir: str | None, download: bool | None = None) -> Dataset:
  family, splits = _IDX_SETS[name]
  folder = _idx_source(name, data_dir, download)
  if folder is not None:
    parts = [_load_idx_split(folder, family, s) for s in splits]
  else:
    try:
      parts = _tfds_parts(family, splits)
    except Exception as e:  # noqa: BLE001 - any tfds failure becomes the one clear message
      reason = f'could not provide it ({type(e).__name__}: {_first_line(str(e))})'
      raise _idx_not_found(name, data_dir, reason) from e
  return _from_uint8(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), name)


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


def _usps_folder(data_dir: str | None) -> Path:
  """The first folder holding zip.train.gz + zip.test.gz or usps.h5; the not-found error otherwise."""
  for folder in _candidate_folders('usps', data_dir):
    if all((folder / f).is_file() for f in ('zip.train.gz', 'zip.test.gz')) or (folder / 'usps.h5').is_file():
      return folder
  raise UserError(f"dataset 'usps': neither zip.train.gz + zip.test.gz nor usps.h5 found. Looked in: "
                  f"{'; '.join(_looked_in('usps', data_dir))}. Get the files from the Elements of Statistical "
                  "Learning data page (or Kaggle's usps.h5) and put them in $UDL_DATA_DIR/usps/.")


def _load_usps(data_dir: str | None) -> Dataset:
  folder = _usps_folder(data_dir)
  if (folder / 'zip.train.gz').is_file() and (folder / 'zip.test.gz').is_file():
    parts = [_read_usps_text(folder / 'zip.train.gz'), _read_usps_text(folder / 'zip.test.gz')]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
  else:
    x, y = _read_usps_h5(folder / 'usps.h5')
  return Dataset(x.reshape(-1, 16, 16, 1), y, 'usps', 10)


# -------------------------------------------------------------------------------------------- image folder

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
# Full scale of the PIL modes wider than 8 bits ('I' is how PIL may hold a 16-bit PNG; 'F' is taken as [0, 1]).
_WIDE_MODES = {'I;16': 65535, 'I;16B': 65535, 'I;16L': 65535, 'I;16N': 65535, 'I': 65535, 'F': 1.0}


def _grey(im, size: int, path: Path) -> np.ndarray:
  """`im` as a grey (size, size) float32 array in [0, 1]; wide modes are read at full depth, as convert('L')
  would clip them (a 16-bit PNG becomes almost binary)."""
  from PIL import Image
  full = _WIDE_MODES.get(im.mode)
  if full is None:
    return np.asarray(im.convert('L').resize((size, size), Image.BILINEAR)).astype(np.float32) / 255.0
  values = np.asarray(im, np.float32)
  if not (np.isfinite(values).all() and 0 <= values.min() and values.max() <= full):
    raise UserError(f'{path}: {im.mode} image with values outside [0, {full:g}]; save it as 8- or 16-bit grey')
  return np.asarray(Image.fromarray(values / np.float32(full)).resize((size, size), Image.BILINEAR))


def _read_label_csv(path: Path) -> dict[str, int | str]:
  """filename -> label; labels are ints when every label is an integer, so that `01` and `1` are one class.

  'utf-8-sig' reads the byte-order mark spreadsheets write; cells are stripped of surrounding spaces.
  """
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      reader = csv.DictReader(f)
      header = {k.strip() for k in reader.fieldnames or ()}
      rows = [(reader.line_num, {k.strip(): (v or '').strip() for k, v in r.items() if isinstance(k, str)})
              for r in reader]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise UserError(f'{path}: cannot read labels ({e}); save it as a UTF-8 CSV') from e
  if not {'filename', 'label'} <= header:
    raise UserError(f'{path}: a labels CSV needs a header with the columns filename,label')
  rows = [(n, r) for n, r in rows if any(r.values())]  # rows of empty cells, as spreadsheets export
  blank = [f"line {n} ({r['filename'] or 'no filename'})" for n, r in rows if not (r['filename'] and r['label'])]
  if blank:
    raise UserError(f'{path}: empty filename or label at {", ".join(blank[:5])}'
                    f'{" and more" if len(blank) > 5 else ""}; fill them in or delete those rows')
  numeric = all(re.fullmatch(r'[+-]?[0-9]+', r['label']) for _, r in rows)
  labels: dict[str, int | str] = {}
  for _, r in rows:
    name, label = r['filename'], int(r['label']) if numeric else r['label']
    # A repeat with the same label is harmless (e.g. two exports pasted together); a different one is ambiguous.
    if labels.setdefault(name, label) != label:
      raise UserError(f'{path}: {name} is listed twice, with labels {labels[name]} and {label}; keep one row')
  return labels


def _existing_folder(folder: str | Path) -> Path:
  folder = Path(folder).expanduser()
  if not folder.is_dir():
    raise UserError(f'image folder {folder} does not exist')
  return folder


def _image_folder(data_dir: str | None) -> Path:
  """The folder of dataset 'folder', which has no default."""
  if not data_dir:
    raise UserError("dataset 'folder' needs data_dir: the folder that holds the images")
  return _existing_folder(data_dir)


def load_folder(folder: str | Path, image_size: int = 28, labels_csv: str | Path | None = None,
                name: str = 'folder') -> Dataset:
  """Every image file in `folder` (sorted), as grey `image_size` squares; labels from a filename,label CSV."""
  from PIL import Image, UnidentifiedImageError
  folder = _existing_folder(folder)
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise UserError(f'{folder}: no image files ({", ".join(IMAGE_SUFFIXES)})')
  images = []
  for p in files:
    try:
      with Image.open(p) as im:
        images.append(_grey(im, image_size, p))
    except (OSError, UnidentifiedImageError) as e:
      raise UserError(f'{p}: not a readable image: {e}') from e
  x = np.stack(images)[..., None]
  y, num_classes = None, None
  if labels_csv is not None:
    by_name = _read_label_csv(Path(labels_csv))
    missing = [p.name for p in files if p.name not in by_name]
    if missing:
      raise UserError(f'{labels_csv}: no label for {len(missing)} images, e.g. {missing[:3]}')
    raw = [by_name[p.name] for p in files]
    classes = sorted(set(raw))  # by integer value when the labels are integers
    y = np.asarray([classes.index(r) for r in raw], np.int32)
    num_classes = len(classes)
  return Dataset(x, y, name, num_classes, tuple(p.name for p in files))


# ------------------------------------------------------------------------------------------------ registry

def _digits() -> Dataset:
  from sklearn.datasets import load_digits
  d = load_digits()
  return Dataset((d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int32), 'digits', 10)


NAMES = ('digits', *_IDX_SETS, 'usps', 'folder')


def _unknown(name: str) -> UserError:
  return UserError(f"unknown dataset '{name}'; valid names: {', '.join(NAMES)}")


def locate(name: str, data_dir: str | None = None, *, download: bool | None = None) -> str:
  """Where `load` would read `name` from: a folder, 'TensorFlow Datasets' or 'embedded'. Reads and creates
  nothing and raises load's not-found error in milliseconds, so a launcher can call it before it makes the
  workdir, and a missing dataset leaves no trace."""
  if name == 'digits':
    return 'embedded (scikit-learn)'
  if name == 'folder':
    return str(_image_folder(data_dir))
  if name == 'usps':
    return str(_usps_folder(data_dir))
  if name in _IDX_SETS:
    return str(_idx_source(name, data_dir, download) or 'TensorFlow Datasets')
  raise _unknown(name)


def load(name: str, data_dir: str | None = None, *, image_size: int = 28, labels_csv: str | None = None,
         download: bool | None = None) -> Dataset:
  """Loads a dataset by name (see NAMES); `folder` needs `data_dir`, the folder of images.

  `download` is for the MNIST family when no files are found: True lets TensorFlow Datasets download, False
  forbids it, None (default) defers to $UDL_DOWNLOAD, else downloads only when the download host answers.
  """
  if name == 'digits':
    return _digits()
  if name == 'folder':
    return load_folder(_image_folder(data_dir), image_size, labels_csv)
  if name == 'usps':
    return _load_usps(data_dir)
  if name in _IDX_SETS:
    return _load_idx_family(name, data_dir, download)
  raise _unknown(name)


def from_config(config) -> Dataset:
  """The dataset a run config names (`dataset`, `data_dir`, `image_size`, `labels_csv`, `download`)."""
  return load(config.dataset, config.data_dir or None, image_size=config.image_size,
              labels_csv=config.labels_csv or None, download=config.get('download'))


def locate_from_config(config) -> str:
  """`locate` for a run config: launchers call it before they create the workdir."""
  return locate(config.dataset, config.data_dir or None, download=config.get('download'))

"""Sort new images into the clusters of a finished benchmark run (the photo-organising use).

Loads the saved autoencoder and centres of one seed x method of a run, embeds the new images, and assigns each
to its most probable cluster under DEC's Student's t kernel (the confidence is that probability).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import ml_collections
import numpy as np

from udl_jax import checkpoint, config as udl_config, data, dec, methods, models, plots, results
from udl_jax.errors import UserError

def assignment_of(config, method: str):
  """`assign(z, centres, interval)` of a finished run's method: AE+KMeans and every fine-tuner can sort new
  images into their clusters; the others are refused here, by name."""
  alpha = udl_config.method_cluster_block(config.cluster, method).alpha
  if method == 'ae_kmeans':
    return methods.student_t(alpha)
  methods.import_plugins(config.get('imports', ''))
  found = methods.get(method, **udl_config.method_kwargs(config.cluster, method))
  if not isinstance(found, methods.FineTuner):
    raise UserError(f"method '{method}' cannot assign new images (it keeps no model of its clusters); use "
                    'ae_kmeans or a fine-tuning method (dec, idec, dcn, dkm)')
  return dec.assignment(found, alpha)


def load_run(run_dir: Path, method: str, seed: int) -> tuple[ml_collections.ConfigDict, dict, np.ndarray]:
  """(config, autoencoder params, centres) saved by the benchmark for one seed and method."""
  config_path = run_dir / 'config.json'
  if not config_path.exists():
    raise UserError(f'{run_dir} is not a benchmark run folder (no config.json)')
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  seed_dir = run_dir / f'seed_{seed}'
  try:
    if method == 'ae_kmeans':
      params, centres = checkpoint.load_tree(seed_dir / 'ae' / 'params'), np.load(seed_dir / 'ae_kmeans.npz')['centres']
    else:
      assignment_of(config, method)  # refuses a method that cannot assign, before looking for its files
      saved = checkpoint.load_tree(seed_dir / method / 'params')
      params, centres = saved['ae'], np.asarray(saved['centres'])
  except FileNotFoundError as e:
    raise UserError(f'{run_dir}: no finished {method} model for seed {seed} ({e.filename} missing); '
                    'finish the run first or pick another --seed/--method') from e
  return config, params, centres


def load_new_data(spec: str, image_size: int, labels_csv: str | None = None) -> data.Dataset:
  """A dataset name, or a folder of images (resized to the size the model was trained on, labels optional)."""
  if Path(spec).is_dir():
    return data.load_folder(spec, image_size, labels_csv)
  return data.load(spec)


def assign(run_dir: str | Path, spec: str, method: str = 'dec', seed: int = 0,
           labels_csv: str | None = None) -> tuple[data.Dataset, np.ndarray, np.ndarray]:
  """(new dataset, cluster labels, confidences)."""
  run_dir = Path(run_dir)
  config, params, centres = load_run(run_dir, method, seed)
  trained_shape = tuple(json.loads((run_dir / 'image_shape.json').read_text()))
  dataset = load_new_data(spec, trained_shape[0], labels_csv)
  if dataset.image_shape != trained_shape:
    raise UserError(f'{spec}: images are {dataset.image_shape} but the model was trained on {trained_shape}')
  model = models.from_config(config, trained_shape)
  # The assignment the method trained with, with its own alpha (cluster.method_overrides), not the default.
  q, _ = dec.predict_on_host(model, {'ae': params, 'centres': centres},
                             models.model_input(config.model.name, dataset.x), assignment_of(config, method))
  return dataset, q.argmax(1).astype(np.int32), q.max(1)


def write_assignments(dataset: data.Dataset, labels: np.ndarray, confidence: np.ndarray, out_dir: str | Path,
                      title: str) -> None:
  """assignments.csv (filename_or_index, cluster, confidence) and clusters.png, both written atomically."""
  out_dir = Path(out_dir)
  names = dataset.ids or [str(i) for i in range(len(dataset))]
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(['filename_or_index', 'cluster', 'confidence'])
  writer.writerows((n, int(c), f'{p:.4f}') for n, c, p in zip(names, labels, confidence))
  results.write_atomic(out_dir / 'assignments.csv', buf.getvalue())
  plots.cluster_grid(dataset.x, labels, out_dir / 'clusters.png', title=title, confidence=confidence)

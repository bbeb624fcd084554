"""Sort new images into the clusters of a finished benchmark run (the photo-organising use).

Loads the saved autoencoder and centres of one seed x method of a run, embeds the new images, and assigns each
to its most probable cluster under the method's own soft assignment (DEC's Student's t kernel unless the
method has another, e.g. DKM's softmax; the confidence is that probability).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import ml_collections
import numpy as np

from udl_jax import checkpoint, config as udl_config, data, dec, methods, models, plots, records, results
from udl_jax.errors import UserError


def _method(config, method: str, settings: dict | None = None) -> methods.Method:
  kwargs = settings['hyperparameters'] if settings else udl_config.method_kwargs(config.cluster, method)
  return methods.get(method, **kwargs)


def assignment_of(config, method: str, settings: dict | None = None):
  """`assign(z, centres, interval)` of a finished run's method (AE+KMeans or a fine-tuner; `check_method` has
  refused the others), with the method's own alpha and hyperparameters: those its trial was made with
  (`settings`, from seed_S/methods.json), else config.json's (cluster.method_overrides), not the defaults."""
  alpha = settings['alpha'] if settings else udl_config.method_cluster_block(config.cluster, method).alpha
  if method == 'ae_kmeans':
    return methods.student_t(alpha)
  return dec.assignment(_method(config, method, settings), alpha)


def _can_assign(config, method: str) -> bool:
  """AE+KMeans and every fine-tuner keep a model of their clusters; k-means on pixels, embedding clusterers and
  own trainers do not."""
  return method == 'ae_kmeans' or (method in methods.names() and isinstance(_method(config, method),
                                                                         methods.FineTuner))


def check_method(run_dir: Path, config, method: str, seed: int, imports: str = '') -> None:
  """Refuses a method that seed `seed` of the run cannot sort new images with, naming those it can.

  The run's plugins are imported first (config.json's `imports`, then `imports`), so a method registered by
  `--config.imports` is valid wherever its trial finished. config.json holds the last run's settings: a later
  run without the plugin's module drops it from `imports`, hence the extra `imports`.
  """
  methods.import_plugins(','.join(filter(None, (config.get('imports', ''), imports))))
  ran = [r['method'] for r in records.read_seed(run_dir, seed)]
  usable = [m for m in ran if _can_assign(config, m)]
  if method in usable:
    return
  if not ran:
    finished = sorted(int(p.parent.name[5:]) for p in run_dir.glob('seed_*/trials.csv'))
    raise UserError(f'{run_dir}: no finished trial of seed {seed} ({run_dir / f"seed_{seed}" / "trials.csv"} is '
                    f'missing); finished seeds: {", ".join(map(str, finished)) or "none"}')
  unregistered = [m for m in ran if m not in methods.names() + methods.BASELINES]
  choice = f'seed {seed} can assign with: {", ".join(usable) or "none of its methods"}' + (
      f' (and maybe {", ".join(unregistered)}, with --imports=THEIR_MODULE)' if unregistered else '')
  if method not in ran:
    raise UserError(f"{run_dir}: seed {seed} has no finished '{method}' trial; {choice}")
  if method in unregistered:
    raise UserError(f"{run_dir}: '{method}' ran here, but no imported module registers it (config.json's "
                    f"imports: '{config.get('imports', '')}'); name its module with --imports=MODULE")
  raise UserError(f"method '{method}' cannot assign new images (it keeps no model of its clusters); {choice}")


def load_run(run_dir: Path, method: str, seed: int,
             imports: str = '') -> tuple[ml_collections.ConfigDict, dict, np.ndarray]:
  """(config, autoencoder params, centres) saved by the benchmark for one seed and method."""
  config_path = run_dir / 'config.json'
  if not config_path.exists():
    raise UserError(f'{run_dir} is not a benchmark run folder (no config.json)')
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  check_method(run_dir, config, method, seed, imports)  # before looking for its files
  seed_dir = run_dir / f'seed_{seed}'
  try:
    if method == 'ae_kmeans':
      params, centres = checkpoint.load_tree(seed_dir / 'ae' / 'params'), np.load(seed_dir / 'ae_kmeans.npz')['centres']
    else:
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


def assign(run_dir: str | Path, spec: str, method: str = 'dec', seed: int = 0, labels_csv: str | None = None,
           imports: str = '') -> tuple[data.Dataset, np.ndarray, np.ndarray]:
  """(new dataset, cluster labels, confidences); `imports`: plugin modules beyond config.json's."""
  run_dir = Path(run_dir)
  config, params, centres = load_run(run_dir, method, seed, imports)
  trained_shape = tuple(json.loads((run_dir / 'image_shape.json').read_text()))
  dataset = load_new_data(spec, trained_shape[0], labels_csv)
  if dataset.image_shape != trained_shape:
    raise UserError(f'{spec}: images are {dataset.image_shape} but the model was trained on {trained_shape}')
  model = models.from_config(config, trained_shape)
  # config.json holds the last command's settings; methods.json those this seed's trial was made with.
  settings = records.read_method_settings(run_dir / f'seed_{seed}').get(method)
  q, _ = dec.predict_on_host(model, {'ae': params, 'centres': centres},
                             models.model_input(config.model.name, dataset.x), assignment_of(config, method, settings))
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

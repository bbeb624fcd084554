"""Assign new images to the clusters of a finished benchmark run.

  python -m experiments.assign --workdir=runs/benchmark_digits --data=PHOTO_FOLDER --out=runs/sorted
  python -m experiments.assign --workdir=runs/mnist --data=mnist_test --method=idec --seed=2

Writes OUT/assignments.csv (filename_or_index, cluster, confidence) and OUT/clusters.png.
"""

from absl import flags

from experiments import launch
from udl_jax import assign, log, metrics, results

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of a finished benchmark run.', required=True)
_DATA = flags.DEFINE_string('data', None, 'A dataset name (e.g. mnist_test) or a folder of images.',
                            required=True)
_METHOD = flags.DEFINE_string('method', 'dec', 'Which trained model assigns: ae_kmeans or any fine-tuning method '
                             'the seed ran (dec, idec, dcn, dkm, or one registered by the run\'s imports).')
_SEED = flags.DEFINE_integer('seed', 0, 'Which seed of the run.')
_LABELS = flags.DEFINE_string('labels_csv', None, 'Optional filename,label CSV for an image folder: scores '
                              'the assignment (ACC/NMI/ARI into OUT/metrics.json).')
_IMPORTS = flags.DEFINE_string('imports', '', 'Comma-separated modules registering plugin methods, beyond the '
                               'imports in WORKDIR/config.json (which a later run without them replaces).')
_OUT = flags.DEFINE_string('out', None, 'Output folder (default: WORKDIR/assign_<method>_seed<seed>).')


def main(argv):
  launch.check_no_positional(argv)
  dataset, labels, confidence = assign.assign(_WORKDIR.value, _DATA.value, _METHOD.value, _SEED.value,
                                              _LABELS.value, _IMPORTS.value)
  out = _OUT.value or f'{_WORKDIR.value}/assign_{_METHOD.value}_seed{_SEED.value}'
  assign.write_assignments(dataset, labels, confidence, out,
                           f'{_DATA.value}: {len(dataset)} images by {_METHOD.value} (seed {_SEED.value})')
  log.info('wrote %s/assignments.csv and clusters.png (%d images, %d clusters used)', out, len(dataset),
           len(set(labels.tolist())))
  if dataset.y is not None:
    scores = metrics.evaluate(dataset.y, labels)
    results.write_json(f'{out}/metrics.json', scores)
    log.info('against the labels: %s', scores)


if __name__ == '__main__':
  launch.run(main)

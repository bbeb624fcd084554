"""Writes results/README.md and the README's results block from the committed run folders in results/.

  python -m experiments.render_results

Tables are copied from each folder's table.md and commands from its COMMAND.md (both written by
`experiments.publish` from a real run); nothing here types a number. Run it after every `publish`.
"""

import json
import re
import sys
from pathlib import Path

from udl_jax import results
from udl_jax.results import METHOD_LABELS

RESULTS = Path('results')
README = Path('README.md')

PUBLISHED = """## Published numbers to compare with (DEC-keras, means of 10 runs, full 70k sets)

| data | KMeans acc/nmi | AE+KMeans acc/nmi | DEC acc/nmi |
| --- | --- | --- | --- |
| MNIST | .53 / .50 | .88 / .81 | .91 / .87 |
| Fashion-MNIST | .47 / .51 | .61 / .64 | .62 / .65 |
| USPS | .67 / .63 | .71 / .68 | .76 / .79 |
"""

HEADER = """# Results

Every table and figure here is a copy of a real run's files (`python -m experiments.publish`), with the exact
command, seeds, compute time, machine and package versions in the folder's `COMMAND.md`; this page is written
by `python -m experiments.render_results`. Data came from `UDL_DATA_DIR=../shared/data` (the original MNIST /
Fashion-MNIST IDX files). Machine: a 2-core CPU, no GPU (an AMD EPYC, except `digits`: an Intel Xeon; each
COMMAND.md names it), except the folders whose line below names a GPU (one lent NVIDIA H200). Timings were taken while other jobs shared the machine, so they are upper bounds, not speed
measurements (those are in `benchmarks/`).

"""

# Benchmark tables in the order shown, each with a line saying what it is.
TABLES = {
    'digits': 'Embedded 8x8 digits, the default benchmark.',
    'digits_zoo': 'Embedded 8x8 digits, every method (the default settings, 10 seeds).',
    'digits_vade': 'Embedded 8x8 digits, VaDE beside the baselines (the default settings, 10 seeds).',
    'digits_vade_bernoulli': 'Embedded 8x8 digits, VaDE with its MNIST recipe (`reference=vade`: an autoencoder '
                             'with a sigmoid output on binary cross-entropy, the Bernoulli likelihood), 300 VaDE '
                             'epochs.',
    'digits_dcec': 'Embedded 8x8 digits, DCEC with its own recipe (`reference=dcec`: convolutional autoencoder; its '
                   'AE + KMeans row is CAE + KMeans).',
    'digits_da': 'Embedded 8x8 digits, DEC-DA and IDEC-DA with DEC-DA\'s recipe (augmented pretraining and '
                 'clustering), and plain DEC from the same augmented autoencoders.',
    'digits_n2d': 'Embedded 8x8 digits, N2D\'s whole recipe (`reference=n2d`: 1000 Adam epochs, then UMAP + GMM), 6 '
                  'seeds.',
    'digits_holdout': 'The same, holdout protocol: fit on 70%, score the 30% held out.',
    'mnist_test': 'MNIST test set (10k), DEC-keras settings.',
    'mnist_test_zoo': 'MNIST test set (10k), DEC-keras settings, every method.',
    'mnist_test_holdout': 'MNIST test set (10k), holdout protocol.',
    'mnist_test_da': 'MNIST test set (10k), DEC-DA and IDEC-DA with DEC-DA\'s own recipe (500 augmented pretraining '
                     'epochs).',
    'mnist_test_vade': 'MNIST test set (10k), VaDE with its MNIST recipe (`reference=vade`), 300 VaDE epochs.',
    'mnist_test_dcec': 'MNIST test set (10k), DCEC with its own recipe (`reference=dcec`: convolutional autoencoder; '
                       'its AE + KMeans row is CAE + KMeans), on one NVIDIA H200 GPU.',
    'mnist_test_reference': 'MNIST test set (10k), DEC-keras settings, in DEC-keras\'s reference mode '
                            '(`--config.reference=dec_keras`).',
    'mnist': 'MNIST-70k with DEC-keras\'s published settings (300 pretraining epochs, SGD lr 1).',
    'mnist_n2d': 'MNIST-70k with N2D\'s recipe (`reference=n2d`: Adam autoencoder), 200 of its 1000 pretraining '
                 'epochs (CPU time), and IDEC and DKM from the same autoencoders.',
    'mnist_dec_da': 'MNIST-70k, DEC-DA and IDEC-DA with DEC-DA\'s own recipe (500 augmented pretraining epochs), on one '
                    'NVIDIA H200 GPU.',
    'mnist_n2d_gpu': 'MNIST-70k with the recipe of `mnist_n2d` (200 Adam epochs) on one NVIDIA H200 GPU, its own '
                     'autoencoders: IDEC and DCN (the script\'s deadline stopped DKM).',
    'fashion_mnist': 'Fashion-MNIST-70k with DEC-keras\'s published settings.',
    'fashion_mnist_n2d': 'Fashion-MNIST-70k with N2D\'s recipe (`reference=n2d`: Adam autoencoder, then UMAP + GMM), '
                         '200 of its 1000 pretraining epochs (CPU time).',
    'fashion_mnist_n2d_1000': 'Fashion-MNIST-70k with N2D\'s whole recipe (`reference=n2d`: 1000 Adam epochs), the '
                              'autoencoders pretrained on one NVIDIA H200 GPU, every trial on the CPU; IDEC, DCN and DKM '
                              'from the same autoencoders.',
    'fashion_mnist_n2d_zoo': 'Fashion-MNIST-70k, IDEC, DCN and DKM from the autoencoders of `fashion_mnist_n2d` (200 of N2D\'s '
                             '1000 pretraining epochs, CPU time), seeds 0-2.',
    'fashion_mnist_dk_n2d': 'Fashion-MNIST-70k, N2D (UMAP with N2D\'s settings, then the likeliest of 20 GMM fits) on '
                            'DEC-keras\'s autoencoder (the `fashion_mnist` preset: 300 epochs of SGD, as `fashion_mnist`) '
                            'instead of N2D\'s own.',
    'fashion_mnist_dec_da': 'Fashion-MNIST-70k, DEC-DA and IDEC-DA with DEC-DA\'s own recipe (500 augmented pretraining '
                            'epochs), on one NVIDIA H200 GPU.',
    'fashion_mnist_test_reference': 'Fashion-MNIST test set (10k), DEC-keras settings, in DEC-keras\'s reference mode '
                                    '(`--config.reference=dec_keras`).',
    'mnist_gpu_float32': 'MNIST-70k, published settings, on one NVIDIA H200 GPU, float32.',
    'mnist_gpu_bfloat16': 'The same seeds in mixed precision (`--config.dtype=bfloat16`), run beside the float32 twin.',
}

# Mixed precision against float32, same seeds and settings: (float32 folder, bfloat16 folder, where it ran).
PRECISION_PAIRS = (
    ('mnist_gpu_float32', 'mnist_gpu_bfloat16', 'H200 GPU, published settings (300 epochs)'),
    ('mnist_epochs/sgd_150', 'mnist_bf16_150', '2-core CPU, 150 pretraining epochs, DEC capped at 8,000 iterations'),
)

AUTOENCODERS = ('fashion_ae', 'fashion_sparse_ae', 'fashion_dae', 'fashion_vae')

# The cross-method table: its columns (a dataset, the committed folder holding its newest run of each method,
# in order of preference) and the published ACC / NMI set beside each measured cell.
CROSS_COLUMNS = {
    'digits': ('digits_zoo', 'digits', 'digits_vade_bernoulli', 'digits_vade', 'digits_dcec', 'digits_da'),
    'MNIST-test': ('mnist_test_zoo', 'mnist_test', 'mnist_test_da', 'mnist_test_vade', 'mnist_test_dcec'),
    'MNIST-70k': ('mnist', 'mnist_n2d', 'mnist_dec_da', 'mnist_n2d_gpu'),
    'Fashion-70k': ('fashion_mnist', 'fashion_mnist_n2d_1000', 'fashion_mnist_dk_n2d', 'fashion_mnist_n2d',
                    'fashion_mnist_dec_da', 'fashion_mnist_n2d_zoo'),
}
PUBLISHED_BY_METHOD = results.PUBLISHED_BY_METHOD  # (column, method): (ACC, NMI, source)
# Cross-method runs whose trials ran on a lent GPU, so that their cells say so beside their (GPU) times. Named here,
# not read from summary.json: mnist_n2d_gpu's table was written on the CPU afterwards (its COMMAND.md says why).
GPU_RUNS = {'mnist_dec_da': 'an H200', 'fashion_mnist_dec_da': 'an H200', 'mnist_n2d_gpu': 'an H200',
            'mnist_test_dcec': 'an H200'}


def command(name: str) -> str:
  """The command in a published folder's COMMAND.md."""
  return re.search(r'```bash\n(.*?)\n```', (RESULTS / name / 'COMMAND.md').read_text(), re.S).group(1)


def command_block(name: str) -> str:
  notes = [line for line in (RESULTS / name / 'COMMAND.md').read_text().splitlines()
           if line.startswith(('Compute time', 'Note:'))]
  return f'```bash\n{command(name)}\n```\n\n' + '\n'.join(notes) + '\n'


def table_section(name: str, what: str) -> str:
  folder = RESULTS / name
  return (f'## `{name}`\n\n{what}\n\n{command_block(name)}\n{(folder / "table.md").read_text().strip()}\n\n'
          f'Per-seed rows: [`trials.csv`]({name}/trials.csv); samples per cluster of the best deep run: '
          f'[`clusters.png`]({name}/clusters.png).\n\n')


def _trials(path: Path) -> dict[tuple[int, str], dict]:
  """A run's trials that have a result as {(seed, method): row}: a failed trial shows as missing."""
  return {(r['seed'], r['method']): r for r in results.scored(results.read_trials(path))}


def epochs_section() -> str:
  """Quality against pretraining length on MNIST-70k: every seed of each mnist_epochs folder, and of `mnist`."""
  runs = [(*path.parent.name.split('_'), path, f'mnist_epochs/{path.parent.name}')
          for path in (RESULTS / 'mnist_epochs').glob('*/trials.csv')]
  if not runs:
    return ''
  if (RESULTS / 'mnist' / 'trials.csv').exists():
    runs.append(('sgd', '300', RESULTS / 'mnist' / 'trials.csv', 'mnist'))
  lines = ['## MNIST-70k: quality against pretraining length (`mnist_epochs`)', '',
           'The `sgd` rows are the published recipe (SGD lr 1, momentum 0.9) stopped after E epochs: each '
           'resumes the\npublished run\'s own checkpoint of epoch E of that seed, which is what training E epochs '
           'from scratch gives (constant\nlearning rate, per-epoch keys), so their pretraining minutes are that '
           'run\'s; the 300-epoch rows are `mnist` itself.\nHow each row was run, its DEC cap and any stop by hand: '
           'the folder\'s `COMMAND.md`.', '',
           '| recipe | epochs | seed | pretraining (min) | AE+KMeans ACC / NMI | DEC ACC / NMI | DEC iterations | '
           'DEC (min) |', '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for recipe, epochs, path, folder in sorted(runs, key=lambda r: (r[0], int(r[1]))):
    trials = _trials(path)
    for seed in sorted({s for s, _ in trials}):
      ae, d = trials.get((seed, 'ae_kmeans')), trials.get((seed, 'dec'))
      cells = [f'[{recipe}]({folder}/COMMAND.md)', str(int(epochs)), str(seed),
               f"{ae['pretrain_seconds'] / 60:.1f}" if ae else '-',
               f"{ae['acc']:.3f} / {ae['nmi']:.3f}" if ae else '-',
               f"{d['acc']:.3f} / {d['nmi']:.3f}" if d else '-',
               str(int(d['iterations'])) if d else '-', f"{d['seconds'] / 60:.1f}" if d else '-']
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n\n'


def _cross_cell(s: dict, device: str = '') -> str:
  """One method's cell of the cross-method table: ACC / NMI means, the NMI's spread, the seeds (and how many
  failed), the time per seed (and where it was measured, when not on this CPU)."""
  n, failed = (s['nmi']['n'] if 'nmi' in s else 0), s.get('failed', 0)
  seeds = f"{n} seed{'s' if n != 1 else ''}" + (f', {failed} failed' if failed else '')
  if not n:
    return f'({seeds})'
  spread = f" ± {s['nmi']['std']:.3f}" if n > 1 else ''
  where = f' on {device}' if device else ''
  return f"{s['acc']['mean']:.3f} / {s['nmi']['mean']:.3f}{spread} ({seeds}, {s['seconds']['mean']:.0f} s{where})"


def _nmi_by_seed(folder: str) -> dict[tuple[int, str], float]:
  return {key: float(row['nmi']) for key, row in _trials(RESULTS / folder / 'trials.csv').items()}


def _nmi_pair_cell(f32: dict, bf16: dict, method: str, seeds: list[int]) -> str:
  """'f32 / bf16 (diff)': the mean NMI of `method` over `seeds` in each run."""
  if not seeds:
    return '-'
  a, b = (sum(nmi[s, method] for s in seeds) / len(seeds) for nmi in (f32, bf16))
  return f'{a:.3f} / {b:.3f} ({b - a:+.3f})'


def precision_section() -> str:
  """bfloat16 against float32 per seed: the NMI of each and their difference, from the two runs' trials."""
  lines = ['## Mixed precision against float32 (MNIST-70k, same seeds)', '',
           'Each row is one seed run twice with the same settings, once with `--config.dtype=bfloat16` (bfloat16 '
           'compute,\nfloat32 parameters and optimiser state). Differences are bfloat16 minus float32. What they '
           'mean: [`benchmarks/README.md`](../benchmarks/README.md#mixed-precision-quality).', '',
           '| where | seed | AE+KMeans NMI f32 / bf16 (diff) | DEC NMI f32 / bf16 (diff) |', '| --- | --- | --- | --- |']
  pairs = [p for p in PRECISION_PAIRS if all((RESULTS / f / 'trials.csv').exists() for f in p[:2])]
  for f32, bf16, where in pairs:
    a, b = _nmi_by_seed(f32), _nmi_by_seed(bf16)
    both = {m: sorted({s for s, n in a if n == m} & {s for s, n in b if n == m}) for m in ('ae_kmeans', 'dec')}
    for seed in sorted(set(both['ae_kmeans']) | set(both['dec'])):
      cells = [_nmi_pair_cell(a, b, m, [seed] if seed in both[m] else []) for m in both]
      lines.append(f'| [{where}]({bf16}/COMMAND.md) | {seed} | ' + ' | '.join(cells) + ' |')
    lines.append(f'| {where} | mean | ' + ' | '.join(_nmi_pair_cell(a, b, m, both[m]) for m in both) + ' |')
  return '\n'.join(lines) + '\n\n' if pairs else ''


def _summary_methods(folder: str) -> dict:
  path = RESULTS / folder / 'summary.json'
  return json.loads(path.read_text())['methods'] if path.exists() else {}


def _column_cells(folders: tuple[str, ...]) -> dict[str, tuple[str, dict]]:
  """Each method of a cross-method column: (the run that supplies it, that run's summary of it); the first of
  the column's runs that has the method supplies it."""
  cells = {}
  for folder in folders:
    for method, summary in _summary_methods(folder).items():
      cells.setdefault(method, (folder, summary))
  return cells


def _cell_sources(columns: dict[str, dict[str, tuple[str, dict]]]) -> str:
  """'digits: `digits_zoo` (KMeans, ...), `digits_dcec` (DCEC; `reference=dcec`); ...': the run that supplies
  each method of each column, so that no cell needs a footnote."""
  parts = []
  for col, cells in columns.items():
    named = []
    for folder in CROSS_COLUMNS[col]:
      supplied = [METHOD_LABELS[m] for m in METHOD_LABELS if m in cells and cells[m][0] == folder]
      if supplied:
        reference = re.search(r'reference=(\w+)', command(folder))
        extra = f'; `reference={reference.group(1)}`' if reference else ''
        named.append(f"`{folder}` ({', '.join(supplied)}{extra})")
    if named:
      parts.append(f"{col}: {', '.join(named)}")
  return '; '.join(parts)


def _cross_method_columns() -> dict[str, dict[str, tuple[str, dict]]]:
  """Each cross-method column's cells: method -> (the run that supplies it, its summary)."""
  return {col: _column_cells(folders) for col, folders in CROSS_COLUMNS.items()}


def cross_method_table(columns: dict[str, dict[str, tuple[str, dict]]]) -> list[str]:
  """Methods as rows, datasets as columns: measured ACC / NMI (mean ± std of NMI, seeds) beside the published
  figure, and each method's own clustering time; every number read from a committed run's summary.json."""
  found = [m for m in METHOD_LABELS if any(m in cells for cells in columns.values())]
  if not found:
    return []
  lines = ['| method | ' + ' | '.join(columns) + ' |', '| --- |' + ' --- |' * len(columns)]
  for method in found:
    row = []
    for col, cells in columns.items():
      cell = _cross_cell(cells[method][1], GPU_RUNS.get(cells[method][0], '')) if method in cells else '-'
      published = PUBLISHED_BY_METHOD.get((col, method))
      if published:
        cell += f' [{published[0]:g} / {published[1]:g} {published[2]}]'  # as published, no digits added
      row.append(cell)
    lines.append(f'| {METHOD_LABELS[method]} | ' + ' | '.join(row) + ' |')
  return lines


CROSS_LEGEND = ('Measured ACC / NMI means (± the NMI\'s standard deviation over seeds, seeds) and, in brackets, the '
                'published ACC / NMI\nwith its source. "s" is the method\'s own clustering time per seed (pretraining, '
                'shared by all deep methods of a seed,\nnot included) on a 2-core CPU, unless the cell '
                'names a GPU. A "-" is not run yet: DCEC and VaDE on a 70k set take hours per seed\non one core '
                'of this CPU (DCEC\'s convolutional pretraining about 4.5 h, VaDE\'s pretraining and 300 epochs '
                'about 3 h),\nso they wait for a GPU or for CPU time.')


def cross_method_section(columns: dict[str, dict[str, tuple[str, dict]]]) -> str:
  """The results page's cross-method table, with the run that supplies each of its cells."""
  table = cross_method_table(columns)
  if not table:
    return ''
  lines = ['## Every method on every dataset', '', f'{CROSS_LEGEND} Where each cell comes from (the run\'s section '
           f'below has its command): {_cell_sources(columns)}.', '', *table]
  return '\n'.join(lines) + '\n\n'


def assign_section() -> str:
  folder = RESULTS / 'assign_example'
  if not (folder / 'metrics.json').exists():
    return ''
  scores = json.loads((folder / 'metrics.json').read_text())
  return ('## Assigning new images (`assign_example`)\n\nThe digits holdout run was trained on 70% of digits; its '
          '539 held-out images of seed 0 were written as PNG files\nand sorted into the clusters of that run\'s DEC '
          f'model:\n\n{command_block("assign_example")}\nScores of the assignment against the labels '
          f'(`metrics.json`): {json.dumps(scores)}.\nThey equal the seed-0 DEC row of `digits_holdout/trials.csv`, '
          'as they should. Output: [`assignments.csv`](assign_example/assignments.csv), '
          '[`clusters.png`](assign_example/clusters.png).\n\n')


def autoencoder_section() -> str:
  rows = ['## Autoencoders on Fashion-MNIST', '', '| model | data | epochs | held-out numbers (`summary.json`) | '
          'figures |', '| --- | --- | --- | --- | --- |']
  for name in AUTOENCODERS:
    path = RESULTS / name / 'summary.json'
    if not path.exists():
      continue
    s = json.loads(path.read_text())
    held = ', '.join(f'{k} {v:.4g}' for k, v in s['heldout'].items())
    figs = ' '.join(f'[{p.name}]({name}/{p.name})' for p in sorted((RESULTS / name).glob('*.png')))
    rows.append(f"| {name} | {s['dataset']} | {s['epochs_run']} | {held} | {figs} |")
  return '\n'.join(rows) + """

Commands: each folder's `COMMAND.md`. `sparse_ae` uses the same architecture as `ae` (10-unit sigmoid code) plus an
L1 penalty of weight 0.01 on all hidden activations: compare their `mean_abs_activation` at nearly equal `val_mse`.
`dae` was trained for only 3 epochs on the 10,000 Fashion-MNIST test images (9,000 after the validation split):
convolutions train at under 100 samples/s on this 2-core CPU (see `benchmarks/README.md`), so its output is
still blurry; the PSNR columns show it already removes most of the salt-and-pepper noise.

In the benchmark tables published before 2026-11-26, "time / seed" of every method but raw KMeans includes that
seed's autoencoder pretraining; tables that end with notes (`digits`) count each method alone and state the
shared pretraining once under the table.
"""


def readme_block(columns: dict[str, dict[str, tuple[str, dict]]]) -> str:
  """The README's results block: the default benchmark's table (what its command prints) and the cross-method
  table; links to the rest."""
  table = cross_method_table(columns)
  parts = [f"{TABLES['digits']}\n\n```bash\n{command('digits')}\n```\n\n"
           f"{(RESULTS / 'digits' / 'table.md').read_text().strip()}"]
  if table:
    parts.append('Every method on every dataset. ' + CROSS_LEGEND + '\n\n' + '\n'.join(table))
  parts.append('Which run supplies each cell and its command, every committed table (the 70k sets with each '
               'method\'s recipe,\nholdout protocol, MNIST test set, ...) and the autoencoder figures: '
               '[`results/README.md`](results/README.md).')
  return '\n\n'.join(parts)


def check_finished(folders) -> None:
  """Refuses to render a table that lacks trials its command asked for (publish refuses them too)."""
  for name in folders:
    path = RESULTS / name / 'summary.json'
    reason = results.unfinished(json.loads(path.read_text())) if path.exists() else None
    if reason:
      sys.exit(f'results/{name} is unfinished ({reason}): finish its run and publish it again')


def check_listed() -> None:
  """Refuses to render while a published table has no section: a folder left out of TABLES would vanish from the
  page without a word. The mixed-precision twins show in the precision section, and DEC-keras's own runs
  (dec_keras_*, from benchmarks/dec_keras.py) in the side-by-side one."""
  shown = set(TABLES) | {folder for pair in PRECISION_PAIRS for folder in pair[:2]}
  unlisted = sorted(p.parent.name for p in RESULTS.glob('*/table.md')
                    if p.parent.name not in shown and not p.parent.name.startswith('dec_keras_'))
  if unlisted:
    sys.exit(f"results/{', results/'.join(unlisted)}: published but not in experiments/render_results.py's TABLES; "
             'add a line there that says what the run is (or remove the folder)')


SIDE_BY_SIDE = RESULTS / 'dec_keras_side_by_side'


def side_by_side_section() -> str:
  """udl_jax beside DEC-keras's own code, same data and seeds: each table `benchmarks.side_by_side` wrote there,
  under the commands of its COMMAND.md."""
  tables = sorted(SIDE_BY_SIDE.glob('*.md'))
  tables = [t for t in tables if t.name not in ('COMMAND.md', 'README.md')]
  if not tables:
    return ''
  notes = (SIDE_BY_SIDE / 'COMMAND.md').read_text().split('\n', 1)[1].strip() if (SIDE_BY_SIDE / 'COMMAND.md').exists() \
      else ''
  notes = notes.replace('](../', '](')  # its links, from results/ rather than from the folder
  body = ''.join(f'{t.read_text().strip()}\n\n' for t in tables)
  return ('## udl_jax beside DEC-keras\'s own code (`dec_keras_side_by_side`)\n\nThe reference code '
          '(`benchmarks/dec_keras.py` runs it on tf-keras) and udl_jax on the same arrays and seeds, with DEC-keras\'s '
          f'settings.\n\n{notes}\n\n{body}')


def main() -> None:
  check_listed()
  names = [n for n in TABLES if (RESULTS / n / 'table.md').exists()]
  check_finished(set(names) | {f for folders in CROSS_COLUMNS.values() for f in folders})
  columns = _cross_method_columns()  # read once: the page and the README show the same table
  page = HEADER + PUBLISHED + '\n' + cross_method_section(columns) + ''.join(table_section(n, TABLES[n]) for n in names)
  page += side_by_side_section() + epochs_section() + precision_section() + assign_section() + autoencoder_section()
  (RESULTS / 'README.md').write_text(page)
  readme = README.read_text()
  start, end = '<!-- results:start -->\n', '<!-- results:end -->'
  if start not in readme or end not in readme:
    sys.exit('README.md lacks the <!-- results:start --> / <!-- results:end --> markers')
  head, rest = readme.split(start, 1)
  README.write_text(head + start + readme_block(columns) + '\n' + end + rest.split(end, 1)[1])
  print(f'wrote {RESULTS / "README.md"} ({len(names)} tables) and the README results block')


if __name__ == '__main__':
  main()

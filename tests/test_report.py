"""report.html of real (tiny) benchmark runs: self-contained, the run's tables and numbers, every figure a PNG,
and rendered by a real browser (headless Chromium: every image decoded, the tables laid out, a non-blank
screenshot). An unlabelled run and a KMeans-only run render too, and TensorBoard scalars are written on request."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from udl_jax import benchmark, report, results
from udl_jax.errors import UserError

from test_benchmark import _small_config  # noqa: E402  (the tiny digits settings of the benchmark's own tests)

MAP_POINTS = 300  # the embedding map's cap in these tests (the default's t-SNE costs seconds)
N_DIGITS = 1797


class _Page(html.parser.HTMLParser):
  """The tables (rows of cell texts, header first), <img> sources, and every src/href value of a page."""

  def __init__(self, text: str):
    super().__init__()
    self.tables, self.images, self.links, self._cell = [], [], [], None
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.links += [v for k, v in attrs.items() if k in ('src', 'href')]
    if tag == 'table':
      self.tables.append([])
    elif tag == 'tr':
      self.tables[-1].append([])
    elif tag in ('td', 'th'):
      self._cell = ''
    elif tag == 'img':
      self.images.append(attrs)

  def handle_endtag(self, tag):
    if tag in ('td', 'th'):
      self.tables[-1][-1].append(self._cell.strip())
      self._cell = None

  def handle_data(self, data):
    if self._cell is not None:
      self._cell += data


@pytest.fixture(scope='module')
def small_map():
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(report, 'MAP_POINTS', MAP_POINTS)
    yield


@pytest.fixture(scope='module')
def labelled_run(tmp_path_factory, small_map):
  """digits, 2 seeds, KMeans / AE+KMeans / DEC, as small as the benchmark's own tests."""
  workdir = tmp_path_factory.mktemp('labelled')
  config = _small_config(methods='kmeans,ae_kmeans,dec', **{'pretrain.epochs': 2})
  benchmark.run(config, workdir)
  return workdir


def _folder_config(folder, **overrides):
  return _small_config(dataset='folder', data_dir=str(folder), image_size=8, seeds=1, n_clusters=4,
                       **{'pretrain.batch_size': 16, 'cluster.batch_size': 16, 'cluster.update_interval': 10,
                          **overrides})


@pytest.fixture(scope='module')
def digit_images(tmp_path_factory):
  """A folder of 80 digit images, no labels."""
  from sklearn.datasets import load_digits
  folder = tmp_path_factory.mktemp('images')
  for i, image in enumerate(load_digits().images[:80]):
    Image.fromarray((image * 255 / 16).astype(np.uint8), 'L').save(folder / f'{i:03d}.png')
  return folder


@pytest.fixture(scope='module')
def unlabelled_run(tmp_path_factory, digit_images, small_map):
  """The folder (dataset.y is None), one seed, KMeans / AE+KMeans / DEC."""
  workdir = tmp_path_factory.mktemp('unlabelled')
  benchmark.run(_folder_config(digit_images, methods='kmeans,ae_kmeans,dec'), workdir)
  return workdir


def _read(workdir):
  text = (workdir / 'report.html').read_text()
  return text, _Page(text), json.loads((workdir / 'summary.json').read_text())


def _check_self_contained(text: str, page: _Page) -> None:
  assert text.startswith('<!DOCTYPE html>') and text.rstrip().endswith('</html>')
  assert not re.search(r'https?://', text), 'an external URL in the report'
  assert '<script' not in text.lower() and '<link' not in text.lower()
  assert page.links and all(v.startswith('data:image/png;base64,') for v in page.links), page.links[:3]
  for image in page.images:
    with Image.open(io.BytesIO(base64.b64decode(image['src'].split(',', 1)[1]))) as im:
      im.verify()
      assert im.format == 'PNG' and min(im.size) >= 100
    assert image['alt']


def test_labelled_report(labelled_run):
  text, page, summary = _read(labelled_run)
  _check_self_contained(text, page)
  results_table, trials_table = page.tables
  # The seed-averaged table: one row per method, the numbers of summary.json (mean ± std over 2 seeds).
  assert results_table[0][:4] == ['method', 'ACC', 'NMI', 'ARI']
  assert [r[0] for r in results_table[1:]] == ['KMeans (raw pixels)', 'AE + KMeans', 'DEC']
  for row, method in zip(results_table[1:], ('kmeans', 'ae_kmeans', 'dec')):
    s = summary['methods'][method]
    assert row[1:4] == [f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in results.METRICS]
    assert row[4] == '2' and row[5] == f"{s['seconds']['mean']:.1f}"
  assert 'published ACC / NMI' not in results_table[0]  # nothing published for digits
  # Every trial: 2 seeds x 3 methods, the ACC of trials.csv.
  trials = results.read_trials(labelled_run / 'trials.csv')
  assert len(trials_table) == 1 + 6
  got = {(int(r[0]), r[1]): r[2] for r in trials_table[1:]}
  assert got == {(t['seed'], results.METHOD_LABELS[t['method']]): f"{t['acc']:.3f}" for t in trials}
  # Figures: pretraining, DEC's curves, a confusion matrix per method, the embedding map, clusters.png.
  alts = [image['alt'] for image in page.images]
  assert len(alts) == 7, alts
  assert sum('Hungarian' in a for a in alts) == 3
  assert f'{MAP_POINTS} of {N_DIGITS} evaluation points' in text
  assert {p.name for p in (labelled_run / 'figures').glob('*.png')} == {
      'pretraining.png', 'dec_curves.png', 'kmeans_confusion.png', 'ae_kmeans_confusion.png', 'dec_confusion.png',
      'embedding.png'}
  assert 'no labels' not in text.lower()


def test_curves_count_a_fine_tuners_iterations_and_an_own_trainers_epochs():
  """DEC's history steps by iteration, VaDE's by epoch (its start at epoch 0); baselines and methods without a
  history (ae_gmm, n2d) get no curves."""
  histories = {'dec': {0: [{'iteration': 0, 'acc': 0.7}, {'iteration': 140, 'acc': 0.8}]},
               'vade': {0: [{'epoch': 0, 'acc': 0.7}, {'epoch': 1, 'loss': 90.0}]},
               'ae_kmeans': {0: [{'epoch': 1, 'loss': 0.1}]}}
  run = types.SimpleNamespace(methods=['kmeans', 'ae_kmeans', 'ae_gmm', 'dec', 'vade'],
                              histories=lambda name: histories.get(name, {}))
  assert report._history_steps(run) == {'dec': 'iteration', 'vade': 'epoch'}


@pytest.mark.parametrize('protocol', ['transductive', 'holdout'])
def test_published_numbers_beside_a_dataset_that_has_them(labelled_run, tmp_path, protocol):
  workdir = tmp_path / 'run'
  shutil.copytree(labelled_run, workdir)  # (its figures come along, current: nothing is redrawn)
  summary = json.loads((workdir / 'summary.json').read_text())
  summary.update(dataset='mnist', protocol=protocol)
  (workdir / 'summary.json').write_text(json.dumps(summary))
  config = _small_config(methods='kmeans,ae_kmeans,dec')
  report.write_report(workdir, config, benchmark.data.from_config(config))
  results_table = _read(workdir)[1].tables[0]
  if protocol == 'holdout':  # the papers score all images: nothing to compare a held-out score with
    assert 'published ACC / NMI' not in results_table[0]
    return
  assert results_table[0][-1] == 'published ACC / NMI'
  assert [r[-1] for r in results_table[1:]] == ['0.53 / 0.5 (DEC-keras)', '0.88 / 0.81 (DEC-keras)',
                                                '0.91 / 0.87 (DEC-keras)']


def test_report_is_redrawn_only_where_its_inputs_changed(labelled_run, monkeypatch):
  config = _small_config(methods='kmeans,ae_kmeans,dec', **{'pretrain.epochs': 2})
  dataset = benchmark.data.from_config(config)
  before = (labelled_run / 'report.html').read_text()
  stamps = {p.name: p.stat().st_mtime_ns for p in (labelled_run / 'figures').glob('*.png')}
  drawn, confusion = [], report.plots.confusion_matrix
  monkeypatch.setattr(report.plots, 'confusion_matrix', lambda *a, **k: (drawn.append(a[2].name), confusion(*a, **k)))
  monkeypatch.setattr(report.plots, 'project_2d', lambda *a, **k: pytest.fail('the t-SNE ran again'))
  report.write_report(labelled_run, config, dataset)  # nothing changed: nothing is drawn
  assert drawn == [] and (labelled_run / 'report.html').read_text() == before
  assert {p.name: p.stat().st_mtime_ns for p in (labelled_run / 'figures').glob('*.png')} == stamps
  # KMeans' trials redone (their labels rewritten): its confusion matrix is drawn again, nothing else.
  for seed in (0, 1):
    path = labelled_run / f'seed_{seed}' / 'kmeans_labels.npz'
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
  report.write_report(labelled_run, config, dataset)
  assert drawn == ['kmeans_confusion.png']


def test_report_of_a_workdir_without_its_saved_parameters(labelled_run, tmp_path):
  """A workdir copied back without its params (as benchmarks/gpu.sh packs them) still gets its report, with a
  note where the embedding map would be."""
  workdir = tmp_path / 'run'
  shutil.copytree(labelled_run, workdir, ignore=shutil.ignore_patterns('params', 'checkpoints', 'figures'))
  config = _small_config(methods='kmeans,ae_kmeans,dec')
  report.write_report(workdir, config, benchmark.data.from_config(config))
  text, page, _ = _read(workdir)
  _check_self_contained(text, page)
  assert 'No embedding map: seed' in text and not (workdir / 'figures' / 'embedding.png').exists()
  assert len(page.images) == 6  # the map alone is missing


def test_unlabelled_report(unlabelled_run):
  text, page, summary = _read(unlabelled_run)
  _check_self_contained(text, page)
  results_table, trials_table = page.tables
  assert [r[1:4] for r in results_table[1:]] == [['n/a'] * 3] * 3
  assert len(trials_table) == 1 + 3 and all(r[2:5] == ['', '', ''] for r in trials_table[1:])
  assert 'no labels: acc, nmi and ari cannot be computed' in text.lower()
  assert 'no confusion matrix' in text
  alts = [image['alt'] for image in page.images]
  assert len(alts) == 4, alts  # pretraining, DEC's curves, the map (clusters only), clusters.png
  assert not any('Hungarian' in a for a in alts)
  assert not (unlabelled_run / 'figures' / 'dec_confusion.png').exists()
  assert 'all 80 evaluation points' in text and 'true class' not in text


def test_kmeans_only_report(tmp_path, digit_images, small_map):
  benchmark.run(_folder_config(digit_images, methods='kmeans'), tmp_path)
  text, page, _ = _read(tmp_path)
  _check_self_contained(text, page)
  assert len(page.tables[0]) == 2 and len(page.tables[1]) == 2
  assert 'No autoencoder was trained' in text and 'raw pixels' in text
  assert len(page.images) == 2  # the map of raw pixels, clusters.png


def test_report_before_any_trial_finished(tmp_path, digit_images):
  """Another process holds every seed: this one writes its outputs with no trial of its own yet."""
  config = _folder_config(digit_images)
  benchmark.write_outputs(config, benchmark.data.from_config(config), tmp_path, [], 0.0)
  text, page, _ = _read(tmp_path)
  assert 'No trial of this command has finished yet.' in text and text.rstrip().endswith('</html>')
  assert not page.tables and not page.images and not re.search(r'https?://', text)


def _tfrecords(path):
  """The serialized records of one TFRecord file (length, its CRC, the bytes, their CRC)."""
  data, out, at = path.read_bytes(), [], 0
  while at < len(data):
    (n,) = struct.unpack('<Q', data[at:at + 8])
    out.append(data[at + 12:at + 12 + n])
    at += 12 + n + 4
  return out


def test_tensorboard_scalars(unlabelled_run, digit_images, monkeypatch):
  pytest.importorskip('tensorboardX', reason='the optional tensorboard extra: pip install -e ".[tensorboard]"')
  from tensorboardX.proto import event_pb2
  config = _folder_config(digit_images, methods='kmeans,ae_kmeans,dec')
  dataset = benchmark.data.from_config(config)
  report.write_report(unlabelled_run, config, dataset)
  target = unlabelled_run / 'tensorboard'
  assert not target.exists()  # not asked for
  with config.unlocked():
    config.tensorboard = True
  report.write_report(unlabelled_run, config, dataset)
  assert sorted(str(p.relative_to(target)) for p in target.iterdir()) == ['seed_0']
  assert sorted(p.name for p in (target / 'seed_0').iterdir()) == ['ae', 'dec']
  history = results.read_jsonl(unlabelled_run / 'seed_0' / 'dec' / 'metrics.jsonl')
  scalars = {}
  for record in _tfrecords(next((target / 'seed_0' / 'dec').iterdir())):
    event = event_pb2.Event.FromString(record)
    for value in event.summary.value:
      scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  assert [s for s, _ in scalars['delta_label']] == [h['iteration'] for h in history]
  np.testing.assert_allclose([v for _, v in scalars['delta_label']], [h['delta_label'] for h in history], rtol=1e-6)
  report.write_tensorboard(unlabelled_run)  # rewritten whole: still one event file per run, no leftovers
  assert len(list((target / 'seed_0' / 'dec').iterdir())) == 1
  assert not list(unlabelled_run.glob('.tensorboard*'))
  # Asked for without tensorboardX installed: one line saying what to install.
  monkeypatch.setitem(sys.modules, 'tensorboardX', None)
  with pytest.raises(UserError, match=re.escape('pip install -e ".[tensorboard]"')):
    report.write_report(unlabelled_run, config, dataset)


# ------------------------------------------------------------------------------------------------ browser

_PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth,
                                                 shown: i.getBoundingClientRect().width}));
  const tables = [...document.querySelectorAll('table')].map(t => ({rows: t.tBodies[0].rows.length,
                                                                    height: t.getBoundingClientRect().height}));
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({images, tables});
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
  found = shutil.which('chromium') or shutil.which('chromium-browser')
  if found:
    return found
  if os.environ.get('UDL_SKIP_BROWSER') == '1':
    pytest.skip('UDL_SKIP_BROWSER=1: the report is not rendered in a browser')
  pytest.fail('headless Chromium is needed to check that the report renders: apt-get install -y chromium '
              '(or set UDL_SKIP_BROWSER=1 to skip this check)')


def _headless(browser: str, tmp_path, *args: str) -> str:
  command = [browser, '--headless', '--disable-gpu', '--no-sandbox', f'--user-data-dir={tmp_path / "profile"}',
             '--window-size=1200,1600', *args]
  done = subprocess.run(command, capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout


@pytest.mark.parametrize('run', ['labelled_run', 'unlabelled_run'])
def test_report_renders_in_chromium(run, request, tmp_path):
  browser = _chromium()
  workdir = request.getfixturevalue(run)
  text, page, _ = _read(workdir)
  probed = tmp_path / 'probed.html'  # a copy with the probe: the product file is left as written
  probed.write_text(text.replace('</body>', _PROBE + '\n</body>'))
  dom = _headless(browser, tmp_path, '--virtual-time-budget=10000', '--dump-dom', probed.as_uri())
  found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
  assert found, dom[-2000:]
  probe = json.loads(html.unescape(found.group(1)))
  assert len(probe['images']) == len(page.images)
  for image in probe['images']:
    assert image['complete'] and image['width'] >= 100 and image['shown'] > 0, image
  assert [t['rows'] for t in probe['tables']] == [len(t) - 1 for t in page.tables]
  assert all(t['height'] > 20 * t['rows'] for t in probe['tables'])
  if run == 'labelled_run':  # one screenshot: the page is drawn, not blank
    shot = tmp_path / 'shot.png'
    _headless(browser, tmp_path, f'--screenshot={shot}', (workdir / 'report.html').as_uri())
    with Image.open(shot) as im:
      grey = np.asarray(im.convert('L'))
    assert grey.shape == (1600, 1200)
    assert (grey < 128).mean() > 0.01 and (grey > 200).mean() > 0.5  # text and tables on a white page

"""Data parallelism: 4 (virtual CPU) devices train to the same numbers as 1 device, in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO_ROOT

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    from udl_jax import clustering, config, data, dec, methods, models, parallel, train
    from udl_jax.errors import UserError

    ds = data.load('digits')
    x = ds.flat[:512]
    model_cfg = config.model_block('ae')
    model_cfg.dims = (32, 16, 4)
    train_cfg = config.train_block()
    train_cfg.epochs, train_cfg.batch_size = 2, 64
    model = models.make_model('ae', ds.image_shape, model_cfg)
    mesh = parallel.make_mesh()
    state, history = train.fit('ae', model, model_cfg, train_cfg, x, None, 0, mesh=mesh)
    params = jax.device_get(state.params)
    param_devices = sorted({len(leaf.sharding.device_set) for leaf in jax.tree.leaves(state.params)})
    init = clustering.kmeans(train.embed(model, params, x), 10, 0, 2)
    cluster_cfg = config.cluster_block()
    cluster_cfg.update_interval, cluster_cfg.maxiter, cluster_cfg.tol, cluster_cfg.batch_size = 10, 30, 0.0, 64
    result = dec.run(model, params, x, ds.y[:512], 10, methods.get('dec'), cluster_cfg, 0, mesh=mesh, init=init)
    errors = {}
    if jax.device_count() > 1:  # (on one device these would just train)
      train_cfg.batch_size = 66
      try:
        train.fit('ae', model, model_cfg, train_cfg, x, None, 0, mesh=mesh)
      except UserError as e:
        errors['train'] = str(e)
      cluster_cfg.batch_size = 66
      try:
        dec.run(model, params, x, None, 10, methods.get('dec'), cluster_cfg, 0, mesh=mesh, init=init)
      except UserError as e:
        errors['dec'] = str(e)
    print('RESULT ' + json.dumps({
        'devices': jax.device_count(), 'mesh': int(mesh.devices.size), 'param_devices': param_devices,
        'losses': [h['loss'] for h in history], 'dec_losses': [h['loss'] for h in result.history if 'loss' in h],
        'centres': result.centres.tolist(), 'labels': result.labels.tolist(), 'errors': errors}))
''')


def _launch(devices: int) -> subprocess.Popen:
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = str(REPO_ROOT) + os.pathsep + env.get('PYTHONPATH', '')
  return subprocess.Popen([sys.executable, '-c', SCRIPT], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  lines = [l for l in out.splitlines() if l.startswith('RESULT ')]
  assert len(lines) == 1, out[-2000:] + err[-2000:]
  return json.loads(lines[0][len('RESULT '):])


@pytest.fixture(scope='module')
def both():
  """The same script on 1 and on 4 devices, run side by side."""
  procs = {n: _launch(n) for n in (1, 4)}
  return {n: _result(p) for n, p in procs.items()}


def test_four_devices_really_used(both):
  assert both[1]['devices'] == 1 and both[1]['mesh'] == 1
  assert both[4]['devices'] == 4 and both[4]['mesh'] == 4
  assert both[1]['param_devices'] == [1]
  assert both[4]['param_devices'] == [4]  # the trained parameters are replicated on all four


def test_same_numbers_on_one_and_four_devices(both):
  one, four = both[1], both[4]
  assert len(one['losses']) == len(four['losses']) == 2
  assert one['losses'][-1] < one['losses'][0]
  np.testing.assert_allclose(four['losses'], one['losses'], rtol=1e-4)
  assert len(one['dec_losses']) == len(four['dec_losses']) == 3
  np.testing.assert_allclose(four['dec_losses'], one['dec_losses'], rtol=1e-4)
  np.testing.assert_allclose(four['centres'], one['centres'], rtol=1e-3, atol=1e-4)
  assert np.mean(np.asarray(four['labels']) != np.asarray(one['labels'])) < 0.01


def test_batch_not_divisible_by_devices(both):
  errors = both[4]['errors']
  assert set(errors) == {'train', 'dec'}, errors
  for message in errors.values():
    assert '66' in message and '4 devices' in message

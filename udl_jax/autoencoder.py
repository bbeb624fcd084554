"""Train one autoencoder (ae, sparse_ae, dae, conv_ae, vae), then measure and draw what it learned.

Workdir: config.json, metrics.jsonl (one line per epoch), checkpoints/, params/, summary.json, and the figures
loss_curves.png, reconstructions.png, plus denoising.png (dae), samples.png and interpolation.png (vae).
Re-running the same command in the same workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from udl_jax import (checkpoint, config as udl_config, data, losses, models, parallel, plots, progress, records,
                     results, train)

FIGURE_COUNT = 10
# What may differ when re-running in the same workdir: it changes no number.
MAY_CHANGE = ('figures', 'distributed', 'train.checkpoint_every', 'download')


def evaluate(model_name: str, model, params, x_val: np.ndarray, model_cfg, seed: int) -> dict:
  """Numbers that say what the model learned, on held-out images (fixed noise/sampling seed)."""
  key = jax.random.key(seed + 1000)
  x = jnp.asarray(x_val)
  out = {}
  if model_name == 'conv_ae':
    o = model.apply(params, x)
    out['val_mse'] = float(losses.mse(o['recon'], x))
    out['mean_abs_code'] = float(jnp.mean(jnp.abs(o['z'])))
  elif model_name in ('ae', 'sparse_ae'):
    o = model.apply(params, x)
    out['val_mse'] = float(losses.mse(o['recon'], x))
    out['mean_abs_activation'] = float(losses.mean_abs_activation(o['hidden']))
    out['mean_abs_code'] = float(jnp.mean(jnp.abs(o['z'])))
  elif model_name == 'dae':
    noisy = losses.salt_and_pepper(key, x, model_cfg.noise_amount)
    denoised = model.apply(params, noisy)['recon']
    out['psnr_noisy_db'] = float(losses.psnr(noisy, x))
    out['psnr_denoised_db'] = float(losses.psnr(denoised, x))
    out['val_mse'] = float(losses.mse(denoised, x))
  elif model_name == 'vae':
    o = model.apply(params, x, key)
    nll = jnp.mean(losses.bernoulli_nll(o['logits'], x))
    kl = jnp.mean(losses.gaussian_kl(o['mean'], o['logvar']))
    out.update(val_elbo=float(-(nll + kl)), val_nll=float(nll), val_kl=float(kl))
  return out


def draw_figures(model_name: str, model, params, x_val: np.ndarray, image_shape, history, model_cfg, seed: int,
                 workdir: Path, metrics: dict) -> None:
  key = jax.random.key(seed + 1000)
  shape = (-1, *image_shape)
  x = jnp.asarray(x_val[:FIGURE_COUNT])
  plots.loss_curves(history, workdir / 'loss_curves.png', title=f'{model_name}: training curves')
  if model_name == 'dae':
    noisy = losses.salt_and_pepper(key, jnp.asarray(x_val), model_cfg.noise_amount)[:FIGURE_COUNT]
    denoised = model.apply(params, noisy)['recon']
    plots.denoising(np.asarray(x), np.asarray(noisy), np.asarray(denoised), workdir / 'denoising.png',
                    metrics['psnr_noisy_db'], metrics['psnr_denoised_db'])
    recon = model.apply(params, x)['recon']
  elif model_name == 'vae':
    recon = model.apply(params, model.apply(params, x, method=model.encode), method=model.decode)
    z = jax.random.normal(key, (40, model.latent))
    samples = model.apply(params, z, method=model.decode)
    plots.image_grid(np.asarray(samples).reshape(shape), workdir / 'samples.png',
                     'VAE: samples from the prior N(0, I)')
    ends = model.apply(params, jnp.asarray(x_val[:8]), method=model.encode)
    t = jnp.linspace(0.0, 1.0, 10)[None, :, None]
    path = ends[0::2, None, :] * (1 - t) + ends[1::2, None, :] * t  # (4, 10, latent)
    frames = model.apply(params, path.reshape(-1, model.latent), method=model.decode)
    plots.interpolation(np.asarray(frames).reshape(4, 10, *image_shape), workdir / 'interpolation.png',
                        'VAE: decoded straight lines between the codes of two test images')
  else:
    recon = model.apply(params, x)['recon']
  plots.reconstructions(np.asarray(x).reshape(shape), np.asarray(recon).reshape(shape),
                        workdir / 'reconstructions.png', f'{model_name}: held-out images and reconstructions')


def run(config, workdir: str | Path) -> dict:
  """Trains (or resumes) the configured autoencoder in `workdir`; returns the summary."""
  udl_config.validate(config)
  if config.distributed:
    parallel.initialize_distributed()
  workdir = Path(workdir)
  dataset = data.from_config(config)
  mesh = parallel.make_mesh()
  udl_config.validate_for_data(config, dataset, mesh)
  # Like the benchmark: a finished run is never resumed with other settings; an unfinished one starts over.
  start_over = records.check_resumable(workdir, records.saved_config(workdir), config, MAY_CHANGE, 'figures and checkpoint_every',
                                       has_finished_work=(workdir / 'params').exists())
  parallel.barrier('read the workdir')
  if parallel.is_main_process():
    workdir.mkdir(parents=True, exist_ok=True)
    if start_over:
      shutil.rmtree(workdir / 'checkpoints', ignore_errors=True)
    results.write_json(workdir / 'config.json', config.to_dict())
  name = config.model.name
  model = models.from_config(config, dataset.image_shape)
  x = models.model_input(name, dataset.x)
  tr, va = train.split_train_val(len(x), config.train.val_fraction, config.seed)
  x_val = x[va] if len(va) else x[tr[:1000]]
  t0 = time.perf_counter()
  progress.start_run(1, 0)
  try:
    state, history = train.fit(name, model, config.model, config.train, x[tr], x[va] if len(va) else None,
                               config.seed, workdir / 'checkpoints', mesh, image_shape=dataset.image_shape)
  finally:
    progress.end_run()
  params = jax.device_get(state.params)
  results.write_jsonl(workdir / 'metrics.jsonl', history)
  checkpoint.save_tree(workdir / 'params', params)
  metrics = evaluate(name, model, params, x_val, config.model, config.seed)
  if config.figures:
    draw_figures(name, model, params, x_val, dataset.image_shape, history, config.model, config.seed, workdir,
                 metrics)
  summary = {'model': name, 'dataset': config.dataset, 'epochs_run': len(history),
             'final': history[-1] if history else None, 'heldout': metrics,
             'train_seconds': float(sum(h['seconds'] for h in history)),
             'wall_seconds_this_process': time.perf_counter() - t0, 'environment': results.environment()}
  results.write_json(workdir / 'summary.json', summary)
  return summary

"""Random small translations and rotations of image batches, on device (DEC-DA's augmentation).

DEC-DA (Guo et al. 2018) trains on images shifted by up to 10% of their side and rotated by up to 10 degrees
(Keras' ImageDataGenerator: width/height_shift_range 0.1, rotation_range 10, bilinear, nearest fill). Here the
same transform is plain `jax.numpy` on a batch, so it runs inside the jitted training step, and its randomness
comes from the step's key: a resumed run draws the same transforms as an uninterrupted one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

MAX_SHIFT = 0.1      # of the image side, in each direction (DEC-DA)
MAX_DEGREES = 10.0   # rotation, either way (DEC-DA)


def transform(image: jax.Array, shift: jax.Array, angle: jax.Array) -> jax.Array:
  """One (H, W, C) image moved by `shift` = (dy, dx) pixels and rotated by `angle` radians about its centre.

  Each output pixel samples the input bilinearly at its inverse-mapped position; positions outside the image
  take the nearest edge pixel (Keras' default fill)."""
  h, w, _ = image.shape
  cy, cx = (h - 1) / 2, (w - 1) / 2
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing='ij')
  y, x = yy - cy - shift[0], xx - cx - shift[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  source = [cos * y - sin * x + cy, sin * y + cos * x + cx]
  channels = jnp.moveaxis(image, -1, 0)
  moved = jax.vmap(lambda c: map_coordinates(c, source, order=1, mode='nearest'))(channels)
  return jnp.moveaxis(moved, 0, -1)


def random_affine(key: jax.Array, images: jax.Array, max_shift: float = MAX_SHIFT,
                  max_degrees: float = MAX_DEGREES) -> jax.Array:
  """(N, H, W, C) images, each shifted by up to `max_shift` of its side and rotated by up to `max_degrees`,
  uniformly at random from `key`."""
  n, h, w, _ = images.shape
  shift_key, angle_key = jax.random.split(key)
  shifts = jax.random.uniform(shift_key, (n, 2), minval=-max_shift, maxval=max_shift) * jnp.array([h, w])
  angles = jnp.deg2rad(jax.random.uniform(angle_key, (n,), minval=-max_degrees, maxval=max_degrees))
  return jax.vmap(transform)(images, shifts, angles).astype(images.dtype)


def augmented_loss(loss_fn, image_shape: tuple[int, int, int]):
  """`loss_fn(params, x, rng)` on randomly moved copies of the batch (input and reconstruction target alike,
  as DEC-DA pretrains). `x` may be flat rows (dense models) or images; it is moved as `image_shape` images."""
  def loss(params, x, rng):
    move_key, rng = jax.random.split(rng)
    moved = random_affine(move_key, x.reshape(x.shape[0], *image_shape)).reshape(x.shape)
    return loss_fn(params, moved, rng)
  return loss

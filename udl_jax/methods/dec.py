"""DEC (Xie et al. 2016): KL(P || Q) of the Student's t soft assignment to its sharpened target."""

from udl_jax import clustering
from udl_jax.methods import base, register


@register('dec')
def dec() -> base.FineTuner:
  """Encoder and centres trained; the decoder is dropped."""
  return base.FineTuner('dec', loss=lambda b: clustering.kl_divergence(b.p, b.q))

"""DEC (Xie et al. 2016): KL(P || Q) of the Student's t soft assignment to its sharpened target."""

import dataclasses

from udl_jax import clustering
from udl_jax.methods import base, register


@register('dec')
def dec() -> base.FineTuner:
  """Encoder and centres trained; the decoder is dropped."""
  return base.FineTuner('dec', loss=lambda b: clustering.kl_divergence(b.p, b.q))


@register('dec_da')
def dec_da() -> base.FineTuner:
  """DEC-DA (Guo et al. 2018): DEC's loss on randomly shifted and rotated batches, against targets computed on
  the clean images. The paper also pretrains with augmentation: --config.pretrain.augment=True."""
  return dataclasses.replace(dec(), name='dec_da', augment=True)

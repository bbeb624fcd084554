"""IDEC (Guo et al. 2017): L = L_r + gamma * KL(P || Q), the decoder kept to preserve local structure."""

import dataclasses

from udl_jax import clustering, losses
from udl_jax.methods import base, register


@register('idec')
def idec(gamma: float = 0.1) -> base.FineTuner:
  """The paper's (and its reference code's) weighting: MSE reconstruction plus gamma = 0.1 times the KL term."""
  return base.FineTuner('idec', needs_decoder=True,
                        loss=lambda b: losses.mse(b.recon, b.x) + gamma * clustering.kl_divergence(b.p, b.q))


@register('idec_da')
def idec_da(gamma: float = 0.1) -> base.FineTuner:
  """IDEC-DA (Guo et al. 2018): IDEC's two terms on randomly shifted and rotated batches (the reconstruction of
  the moved batch), against targets computed on the clean images; pretrain with --config.pretrain.augment=True."""
  return dataclasses.replace(idec(gamma), name='idec_da', augment=True)


@register('dcec')
def dcec(gamma: float = 0.1) -> base.FineTuner:
  """DCEC (Guo et al. 2017): IDEC's loss on DCEC's convolutional autoencoder (model.name=conv_ae, which `validate`
  requires; `reference=dcec` sets up the paper's whole recipe)."""
  return dataclasses.replace(idec(gamma), name='dcec')

"""WGAN-GP (Gulrajani et al. 2017) in the DCGAN shape used by Nguyen for 64 and 128 px CXR.

The generator is DCGAN's. The critic is DCGAN's discriminator with InstanceNorm instead of
BatchNorm (the gradient penalty is per-sample, so batch-coupled norms are not allowed) and no
sigmoid. The penalty itself lives in :class:`cxraug.families.losses.WassersteinGP`. Layout options
(``widths``, ``bias``, ``norm_first``, ``affine``) as in :mod:`cxraug.models.dcgan`.
"""

from __future__ import annotations

from typing import Any

from cxraug.models.dcgan import DCGANDiscriminator, DCGANGenerator


class WGANGPGenerator(DCGANGenerator):
    pass


class WGANGPCritic(DCGANDiscriminator):
    def __init__(self, size: int = 64, width: int = 64, channels: int = 1, **layout: Any):
        super().__init__(size=size, width=width, channels=channels, norm="instance", **layout)

"""WGAN-GP (Gulrajani et al. 2017) in the DCGAN shape Nguyen uses for 64 and 128 px CXR: the gradient penalty
(:class:`cxraug.families.losses.WassersteinGP`) and an InstanceNorm critic (:mod:`cxraug.models.wgangp`)."""

from __future__ import annotations

from torch import nn

from cxraug.families.base import Config, register
from cxraug.families.noise import NoiseGAN
from cxraug.models.wgangp import WGANGPCritic, WGANGPGenerator


@register
class WGANGP(NoiseGAN):
    name = "wgangp"
    paper = "Gulrajani et al. 2017, arXiv:1704.00028"

    @classmethod
    def build(cls, config: Config, n_labels: int) -> nn.Module:
        return WGANGPGenerator(config["z_dim"], config["data"]["size"], config["width"], **(config.get("g_layout") or {}))

    @classmethod
    def build_critics(cls, config: Config, n_labels: int) -> dict[str, nn.Module]:
        return {"D": WGANGPCritic(config["data"]["size"], config["width"], **(config.get("d_layout") or {}))}

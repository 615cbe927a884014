"""DCGAN (Radford, Metz & Chintala 2016) as Nguyen and Ng & Hargreaves train it for CXR: BCE loss, BatchNorm
critic; networks in :mod:`cxraug.models.dcgan` (paper layouts through ``g_layout`` / ``d_layout``)."""

from __future__ import annotations

from torch import nn

from cxraug.families.base import Config, register
from cxraug.families.noise import NoiseGAN
from cxraug.models.dcgan import DCGANDiscriminator, DCGANGenerator


@register
class DCGAN(NoiseGAN):
    name = "dcgan"
    paper = "Radford, Metz & Chintala 2016, arXiv:1511.06434"

    @classmethod
    def build(cls, config: Config, n_labels: int) -> nn.Module:
        return DCGANGenerator(config["z_dim"], config["data"]["size"], config["width"], **(config.get("g_layout") or {}))

    @classmethod
    def build_critics(cls, config: Config, n_labels: int) -> dict[str, nn.Module]:
        return {"D": DCGANDiscriminator(config["data"]["size"], config["width"], **(config.get("d_layout") or {}))}

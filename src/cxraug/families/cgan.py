"""The conditional GAN for label vectors (Sundaram & Hulkund: 14 CheXpert findings): a generator fed
``[z ; W_y y]`` and a projection discriminator (Miyato & Koyama 2018), trained with the hinge loss
(:mod:`cxraug.models.cgan`). ``sample`` honours ``labels`` [n,K] chosen by the caller, else draws real rows."""

from __future__ import annotations

from torch import nn

from cxraug.families.base import Config, register
from cxraug.families.noise import NoiseGAN
from cxraug.models.cgan import ConditionalGenerator, ProjectionDiscriminator


@register
class ConditionalGAN(NoiseGAN):
    name = "cgan"
    paper = "Sundaram & Hulkund, GAN-based data augmentation for chest X-ray classification; Miyato & Koyama 2018"
    conditional = True

    @classmethod
    def build(cls, config: Config, n_labels: int) -> nn.Module:
        return ConditionalGenerator(n_labels, config["z_dim"], config["data"]["size"], config["width"])

    @classmethod
    def build_critics(cls, config: Config, n_labels: int) -> dict[str, nn.Module]:
        return {"D": ProjectionDiscriminator(n_labels, config["data"]["size"], config["width"])}

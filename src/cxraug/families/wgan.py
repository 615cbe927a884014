"""WGAN with weight clipping (Arjovsky, Chintala & Bottou 2017) in Hussain et al.'s CXR networks
(:mod:`cxraug.models.wgan`): the critic's weights clipped to [-clip, clip] after each update."""

from __future__ import annotations

from torch import nn

from cxraug.families.base import Config, register
from cxraug.families.noise import NoiseGAN
from cxraug.models.wgan import HussainCritic, HussainGenerator


@register
class WGAN(NoiseGAN):
    name = "wgan"
    paper = "Arjovsky, Chintala & Bottou 2017, arXiv:1701.07875; networks: Hussain et al. (COVID-19 CXR)"
    size_keys = ("z_dim",)  # the networks' widths are fixed by the paper

    @classmethod
    def build(cls, config: Config, n_labels: int) -> nn.Module:
        return HussainGenerator(config["z_dim"], config["data"]["size"])

    @classmethod
    def build_critics(cls, config: Config, n_labels: int) -> dict[str, nn.Module]:
        return {"D": HussainCritic(config["data"]["size"])}

"""The networks, one file per architecture: DCGAN, WGAN (Hussain, weight clipping), WGAN-GP, conditional GAN,
CycleGAN, StyleGAN2-ADA, DDPM (diffusion), and the typed config sections of the last two. How each family builds,
trains and samples them: :mod:`cxraug.families`."""

from cxraug.models.cgan import ConditionalGenerator, ProjectionDiscriminator
from cxraug.models.cyclegan import PatchDiscriminator, ResnetGenerator
from cxraug.models.dcgan import DCGANDiscriminator, DCGANGenerator
from cxraug.models.ddpm import DenoisingUNet
from cxraug.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from cxraug.models.wgan import HussainCritic, HussainGenerator
from cxraug.models.wgangp import WGANGPCritic, WGANGPGenerator

__all__ = [
    "ConditionalGenerator",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DenoisingUNet",
    "HussainCritic",
    "HussainGenerator",
    "PatchDiscriminator",
    "ProjectionDiscriminator",
    "ResnetGenerator",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "WGANGPCritic",
    "WGANGPGenerator",
]

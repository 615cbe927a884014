"""Generator families, one module each: DCGAN, WGAN (weight clipping), WGAN-GP, the conditional GAN, CycleGAN,
StyleGAN2-ADA and DDPM (diffusion).

Each module holds one :class:`Family` subclass registered with ``@register`` (its networks in
:mod:`cxraug.models`, how it trains in its :class:`Training` subclass); :data:`FAMILIES` is the only list of
them. :func:`load_generator` gives the family instance of a checkpoint, ready to sample, without the trainer.
Importing this package registers the built-in families (the imports below); docs/architecture.md says how to
add one from outside ``src/``.
"""

from cxraug.families import cgan, cyclegan, dcgan, ddpm, stylegan2, wgan, wgangp  # noqa: F401  (they register)
from cxraug.families.artifact import FORMAT, LEGACY_FORMAT, GeneratorArtifact, current_format, load_generator
from cxraug.families.base import FAMILIES, Family, Training, family_of, make_training, register

__all__ = ["FAMILIES", "FORMAT", "LEGACY_FORMAT", "Family", "GeneratorArtifact", "Training", "current_format",
           "family_of", "load_generator", "make_training", "register"]  # fmt: skip

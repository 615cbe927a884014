"""cxraug: GAN-based augmentation of chest X-ray datasets.

Stages (each reads and writes files, so any one can be rerun alone)::

    dataset -> cache -> trainer -> checkpoints -> synthesis -> benchmark -> report
"""

from cxraug.errors import CXRAugError, ImageReadError

__version__ = "0.1.0"
__all__ = ["CXRAugError", "ImageReadError", "__version__"]

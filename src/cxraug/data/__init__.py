"""Data layer: readers, phantoms, preprocessing, cache, splits and statistics."""

from cxraug.data.imageio import read_image
from cxraug.data.phantom import phantom, phantom_collection, write_phantom_folder
from cxraug.data.preprocess import Preprocess
from cxraug.data.readers import open_collection, read_csv_manifest, read_folder, read_xrv
from cxraug.data.sample import Collection, Sample

__all__ = [
    "Collection",
    "Preprocess",
    "Sample",
    "open_collection",
    "phantom",
    "phantom_collection",
    "read_csv_manifest",
    "read_folder",
    "read_image",
    "read_xrv",
    "write_phantom_folder",
]

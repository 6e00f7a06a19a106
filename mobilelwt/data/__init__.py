"""Data: built-in datasets, ImageFolder trees, seeded splits and batch iteration."""

from mobilelwt.data.builtin import BUILTIN_DATASETS, BuiltinDataset
from mobilelwt.data.bundle import (
    DataBundle,
    augment_batch,
    default_input_size,
    iterate_normalized,
    list_builtin_datasets,
    load_data,
    load_labelled,
    normalize,
    source_fingerprint,
    stratified_split,
)
from mobilelwt.data.imagefolder import scan_image_folder
from mobilelwt.data.images import ImageSet, decode_image

__all__ = [
    "BUILTIN_DATASETS",
    "BuiltinDataset",
    "DataBundle",
    "ImageSet",
    "augment_batch",
    "decode_image",
    "default_input_size",
    "iterate_normalized",
    "list_builtin_datasets",
    "load_data",
    "load_labelled",
    "normalize",
    "scan_image_folder",
    "source_fingerprint",
    "stratified_split",
]

"""Datasets: registry, one-time preparation to uint8 tensors + meta.json, normalisation and ZCA whitening."""
from .host import HostSplit, index_device, split_on_device
from .prepare import class_indices, load_meta, load_split, prepare, reads_data_dir
from .registry import DATASETS, DatasetSpec, get_spec
from .sources import DataMissingError
from .transform import fit_zca, load_zca, save_zca, to_pixels, zca_apply, zca_invert

__all__ = [
    "DATASETS", "DataMissingError", "DatasetSpec", "HostSplit", "class_indices", "fit_zca", "get_spec", "index_device",
    "load_meta", "load_split", "load_zca", "prepare", "reads_data_dir", "save_zca", "split_on_device", "to_pixels",
    "zca_apply", "zca_invert",
]

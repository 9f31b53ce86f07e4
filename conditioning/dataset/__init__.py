"""The on-disk dataset format and its validating reader: the bottom layer every other part reads
datasets through (docs/dataset-format.md)."""

from .atomic import (
    atomic_open,
    atomic_path,
    replace_directory,
    staging_dir,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from .errors import DatasetError
from .format import SPLITS, Dataset, Record, load_dataset
from .pixels import pixel_sha256, quantize, to_unit_range
from .schema import CATEGORICAL, CONTINUOUS, Attribute, ConditionSchema
from .subset import SubsetRule, choose_kept, write_split_sample, write_subset
from .synthetic_set import (
    SyntheticImage,
    SyntheticSet,
    load_synthetic_set,
    read_file_bytes,
    set_files,
    set_sha256,
    snapshot_set,
)
from .writer import DatasetSpec, DatasetWriter

__all__ = [
    "CATEGORICAL",
    "CONTINUOUS",
    "SPLITS",
    "Attribute",
    "ConditionSchema",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "DatasetWriter",
    "Record",
    "SubsetRule",
    "SyntheticImage",
    "SyntheticSet",
    "read_file_bytes",
    "set_files",
    "set_sha256",
    "snapshot_set",
    "load_synthetic_set",
    "load_dataset",
    "pixel_sha256",
    "quantize",
    "replace_directory",
    "staging_dir",
    "to_unit_range",
    "choose_kept",
    "write_json_atomic",
    "write_text_atomic",
    "write_bytes_atomic",
    "atomic_open",
    "atomic_path",
    "write_split_sample",
    "write_subset",
]

"""The data contract every dataset (synthetic or real) is written in, its validator, and
the validated :class:`Dataset` the pipeline passes around."""

from training.data.contract import CONTRACT, DatasetInfo, TableSpec, validate_dataset
from training.data.dataset import Dataset
from training.data.duck import DatasetLike

__all__ = ["CONTRACT", "Dataset", "DatasetInfo", "DatasetLike", "TableSpec", "validate_dataset"]

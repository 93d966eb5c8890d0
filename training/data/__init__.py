"""The data contract every dataset (synthetic or real) is written in, and its validator."""

from training.data.contract import CONTRACT, DatasetInfo, TableSpec, validate_dataset

__all__ = ["CONTRACT", "DatasetInfo", "TableSpec", "validate_dataset"]

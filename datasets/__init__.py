"""Dataset readers (registered by name on import), training samples and data loaders."""
from datasets import cuhkpedes, custom, icfgpedes, rstpreid  # noqa: F401  (registers the readers)
from datasets.bases import DATASETS, BenchmarkData, DatasetError
from datasets.reader import read_benchmark

__all__ = ["DATASETS", "BenchmarkData", "DatasetError", "read_benchmark"]

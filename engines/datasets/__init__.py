"""The dataset catalog: every dataset the lab knows, its state here, and its loader."""
from engines.datasets.base import Dataset, DatasetError, Split
from engines.datasets.catalog import (
                      MAX_RESOLUTION,
                      MIN_RESOLUTION,
                      OFFLINE_DEFAULT,
                      DatasetInfo,
                      DatasetState,
                      catalog,
                      dataset_state,
                      get_info,
                      ready_first,
)
from engines.datasets.download import DownloadFailed
from engines.datasets.loaders import fetch, load_dataset
from engines.datasets.synthetic import make_synthetic

__all__ = ["Dataset", "DatasetError", "DownloadFailed", "fetch", "DatasetInfo", "DatasetState", "Split", "catalog",
           "dataset_state",
           "get_info", "load_dataset", "make_synthetic", "MIN_RESOLUTION", "MAX_RESOLUTION", "OFFLINE_DEFAULT",
           "ready_first"]

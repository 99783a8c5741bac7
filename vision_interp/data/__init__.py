"""Datasets: IDX reader, MNIST with data-directory resolution and checksummed downloads."""

from .idx import read_idx
from .mnist import MnistSplit, ensure_mnist, load_mnist
from .paths import DATA_ENV, data_dir, find_data_file

__all__ = ["read_idx", "MnistSplit", "ensure_mnist", "load_mnist", "DATA_ENV", "data_dir", "find_data_file"]

"""Training: user-row batches, the settings every loop takes, and the loops (Adam; DP-SGD)."""

from fedgraph.training.local import train_local
from fedgraph.training.rows import RowSampler
from fedgraph.training.settings import TrainResult, TrainSettings, resolve_device

__all__ = ["RowSampler", "TrainResult", "TrainSettings", "resolve_device", "train_local"]

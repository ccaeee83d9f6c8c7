"""Local training: user-row batches and the training loop."""

from fedgraph.training.local import TrainResult, TrainSettings, resolve_device, train_local
from fedgraph.training.rows import RowSampler

__all__ = ["RowSampler", "TrainResult", "TrainSettings", "resolve_device", "train_local"]

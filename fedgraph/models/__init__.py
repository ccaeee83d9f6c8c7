"""Models: one per file (see :mod:`fedgraph.models.interest_model`)."""

from fedgraph.models.interest_model import EDGE_FEATURES, InterestModel, UserBatch

__all__ = ["EDGE_FEATURES", "InterestModel", "UserBatch"]

"""Flower ClientApp of one shop (``clients.client_app:app``; ``secagg_app`` with SecAgg+).

The apps live in :mod:`fedgraph.apps.client_app`; this module re-exports them so a Flower
reference to either name runs the same code.
"""

from fedgraph.apps.client_app import app, evaluate, item_counts, secagg_app, train, train_secure

__all__ = ["app", "evaluate", "item_counts", "secagg_app", "train", "train_secure"]

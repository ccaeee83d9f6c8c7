"""Flower ServerApp (``server.server_app:app``): re-exports :mod:`fedgraph.apps.server_app`."""

from fedgraph.apps.server_app import app, main

__all__ = ["app", "main"]

"""fedgraph's Flower apps: the ClientApp (one shop) and the ServerApp (the round loop), thin
wrappers over the library, as in Flower's quickstart. Flower references them as
``fedgraph.apps.client_app:app`` (``secagg_app`` with SecAgg+) and ``fedgraph.apps.server_app:app``
(:mod:`fedgraph.flower_app` writes the bundle); ``clients/`` and ``server/`` at the repository root
re-export the same objects for ``flwr run`` users and older bundles."""

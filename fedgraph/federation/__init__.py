"""Federation logic behind the thin Flower apps in ``clients/`` and ``server/``.

* :mod:`fedgraph.federation.run_dir` – the run directory layout and its resolved config.
* :mod:`fedgraph.federation.shop_side` – what a shop does when asked to train or evaluate.
* :mod:`fedgraph.federation.rounds` – the server's round loop with checkpoints and resume.
"""

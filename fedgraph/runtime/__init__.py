"""Flower's processes, started and stopped one way for both engines.

:mod:`~fedgraph.runtime.processes` starts every Flower process in a session of its own and stops
it with everything it spawned; :mod:`~fedgraph.runtime.superlink` writes the Flower CLI's
configuration, waits for a SuperLink to answer and submits a run with ``flwr run``, streaming its
log. :mod:`~fedgraph.runtime.simulation_engine` runs a prepared run directory on a private
simulation SuperLink (``fedgraph simulate``); :mod:`fedgraph.deploy.server` runs a deployment
SuperLink with TLS and SuperNode authentication (``fedgraph server start``). Both submit the same
app bundle (:mod:`fedgraph.flower_app`).
"""

"""Running fedgraph at partner stores: Flower's Deployment Engine over the network.

* :mod:`fedgraph.deploy.certs` -- CA, server certificate and per-shop key pairs;
* :mod:`fedgraph.deploy.server` -- SuperLink (TLS, SuperNode auth), shop enrolment, the run;
* :mod:`fedgraph.deploy.daemon` -- one shop's daemon: SuperNode, warm ClientApp, ingestion and
  incremental graph updates between rounds;
* :mod:`fedgraph.deploy.ingest` -- exactly-once ingestion from a drop folder or an SQLite table;
* :mod:`fedgraph.deploy.status` -- ``fedgraph client status``;
* :mod:`fedgraph.deploy.cli` -- the ``certs``, ``server`` and ``client`` commands.
"""

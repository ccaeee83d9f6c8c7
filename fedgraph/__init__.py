"""fedgraph: privacy-preserving federated training of e-commerce user interest graphs.

The import package is ``fedgraph``; the distribution is :data:`DISTRIBUTION` (the name
``fedgraph`` on the package registry belongs to an unrelated federated graph learning library,
and the two cannot be installed in one environment: both provide the import package
``fedgraph``).
"""

#: The distribution name (``pip install -e .`` installs it; ``pyproject.toml`` ``[project] name``).
DISTRIBUTION = "fedgraph-interest"


def version() -> str:
    """The installed distribution's version ("unknown" when run from a source tree not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"

"""Baselines are registry entries, one file each (issue 17.2): the config check, the report,
the plot and --help read the registry, so a new baseline needs no edit anywhere else."""

from __future__ import annotations

import pytest

from fedgraph.baselines import BASELINES, Baseline, check_names
from fedgraph.config import DEFAULT_BASELINES, ConfigError


def test_every_default_baseline_is_registered_and_every_registered_one_is_a_default():
    assert set(DEFAULT_BASELINES) == set(BASELINES)


def test_an_unknown_baseline_name_is_a_clear_config_error():
    with pytest.raises(ConfigError, match=r"evaluation.baselines: unknown 'eas'.*registered baselines are popularity, content"):
        check_names(["popularity", "eas"])


def test_importing_the_registry_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fedgraph.baselines as b; assert b.BASELINES; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "False"


def test_a_new_baseline_is_one_registry_entry(monkeypatch, tmp_path, capsys):
    from fedgraph import report
    from fedgraph.cli import main

    def run(context):
        return {shop.shop: {"recall@20": 0.5, "ndcg@20": 0.25, "users": 3} for shop in context.finals}

    new = Baseline("random", label="random items", colour="#000000", order=15, explain="uniformly random unseen items", run=run)
    monkeypatch.setitem(BASELINES, new.name, new)
    check_names(["random"])
    assert [m for m, _, _ in report.methods_in_order()][:3] == ["popularity", "random", "content"]
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "uniformly random unseen items" in capsys.readouterr().out

"""DP accountants are registry entries, one file each (issue 17.2): ε, planning and the config
check go through the registry, so a new accountant is one file."""

from __future__ import annotations

import math

import pytest

from fedgraph.config import ConfigError, RunConfig
from fedgraph.privacy import epsilon, noise_multiplier_for, spent
from fedgraph.privacy.accountants import ACCOUNTANTS, Accountant

HISTORY = [(1.1, 0.05, 400)]


def test_rdp_and_prv_are_registered_and_give_opacus_figures():
    from opacus.accountants import PRVAccountant, RDPAccountant

    assert {"rdp", "prv"} <= set(ACCOUNTANTS)
    for name, cls in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        acc = cls()
        acc.history = list(HISTORY)
        assert epsilon(HISTORY, 1e-5, name) == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-6)


def test_a_new_accountant_is_one_registry_entry(monkeypatch):
    """A (deliberately loose) accountant: ε = steps · q · 10 / σ. Registered once, it is accepted by
    the config, used for ε and for planning the noise, and reported by name."""

    def loose(history, delta):
        return sum(n * q * 10.0 / s for s, q, n in history)

    new = Accountant("loose", description="a test bound", applies=lambda history: True, epsilon=loose, opacus_name=None)
    monkeypatch.setitem(ACCOUNTANTS, new.name, new)
    assert RunConfig.load(overrides=["privacy.accountant=loose"]).privacy.accountant == "loose"
    assert epsilon(HISTORY, 1e-5, "loose") == pytest.approx(400 * 0.05 * 10 / 1.1)
    got = spent(HISTORY, 1e-5, "loose")
    assert got.reported_by == "loose" and got.reported == pytest.approx(400 * 0.05 * 10 / 1.1) and got.rdp > 0
    sigma = noise_multiplier_for(8.0, 1e-5, 0.05, 400, "loose")
    assert epsilon([(sigma, 0.05, 400)], 1e-5, "loose") <= 8.0 and math.isfinite(sigma)


def test_an_unknown_accountant_is_refused_with_the_registered_names():
    with pytest.raises(ConfigError, match="privacy.accountant must be one of prv, rdp"):
        RunConfig.load(overrides=["privacy.accountant=gdp"])
    with pytest.raises(ValueError, match="unknown accountant 'gdp'"):
        epsilon(HISTORY, 1e-5, "gdp")


def test_every_registered_accountant_is_recorded_by_name_in_the_ledger_and_the_audit(monkeypatch, tmp_path):
    """Issue 17.2: ledger entries and the audit had fixed ``epsilon_rdp`` / ``epsilon_prv`` fields,
    so a new accountant's ε was never recorded. Each entry now keys ε by accountant name."""
    from fedgraph.audit.render import privacy_table_rows
    from fedgraph.config import PrivacyConfig
    from fedgraph.privacy.accounting import epsilons_of
    from fedgraph.privacy.budget import open_budget

    new = Accountant("loose", description="a test bound", applies=lambda history: True, epsilon=lambda h, d: 7.5, opacus_name=None)
    monkeypatch.setitem(ACCOUNTANTS, new.name, new)
    budget = open_budget(
        tmp_path, shop="s", users=400, config=PrivacyConfig(enabled=True, target_epsilon=8.0), rounds=2, local_epochs=1, batch_size=20
    )
    assert set(budget.plan["planned_epsilon_by_accountant"]) == {"rdp", "prv", "loose"}
    entry = budget.record_round(1, "v1", [(budget.plan["noise_multiplier"], budget.plan["sample_rate"], 20)])
    by_name = entry["epsilon_by_accountant"]
    assert set(by_name) == {"rdp", "prv", "loose"} and by_name["loose"] == 7.5 and by_name["prv"] < by_name["rdp"]
    assert "epsilon_rdp" not in entry and "epsilon_prv" not in entry
    assert epsilons_of(entry) == by_name
    # ledgers written before: the two fixed fields are read as the same mapping
    assert epsilons_of({"epsilon_rdp": 2.0, "epsilon_prv": None}) == {"rdp": 2.0, "prv": None}
    shop = {"ledger": "verified", "epsilon": by_name["rdp"], "accountant": "rdp", "epsilon_by_accountant": by_name}
    header, rows = privacy_table_rows({"configured": {"accountant": "rdp"}, "accountants": sorted(ACCOUNTANTS), "shops": {"s": shop}})
    assert "ε (prv)" in header and "ε (loose)" in header
    assert rows[0][header.index("ε (loose)")] == 7.5

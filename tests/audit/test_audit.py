"""`fedgraph audit`: statistics, the report (JSON schema, a real headless browser), tamper detection."""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fedgraph.audit import AuditOptions, run_audit, validate
from fedgraph.audit.stats import dp_max_auc, epsilon_lower_bound, max_epsilon_lower_bound, one_run_audit, one_run_p_value, roc

pytestmark = pytest.mark.timeout(600)

QUICK = AuditOptions(models=2, canaries=24, max_shops=2, epochs=1, shadows=4)


# ------------------------------------------------------------------------------ statistics
def test_roc_separates_and_chance_is_half():
    rng = np.random.default_rng(0)
    apart = roc(rng.normal(3, 1, 500), rng.normal(0, 1, 500))
    same = roc(rng.normal(0, 1, 500), rng.normal(0, 1, 500))
    assert apart.auc > 0.95 and apart.tpr_at(0.01) > 0.3
    assert abs(same.auc - 0.5) < 0.06 and same.auc_low < 0.5 < same.auc_high
    assert apart.tpr_at(0.001) <= apart.tpr_at(0.01) <= 1.0


def test_dp_limits_on_attacks():
    assert abs(dp_max_auc(0.0, 0.0) - 0.5) < 1e-3
    assert 0.5 < dp_max_auc(1.0, 1e-5) < dp_max_auc(4.0, 1e-5) < dp_max_auc(8.0, 1e-5) <= 1.0


def test_one_run_bound_grows_with_right_guesses_and_respects_the_claim():
    m = 1000
    # More right guesses prove more; the same guesses are less surprising under a larger claimed ε.
    bounds = [epsilon_lower_bound(m, 200, v, 1e-5) for v in (100, 140, 170, 200)]
    assert bounds[0] == 0.0 and bounds == sorted(bounds) and bounds[-1] > 2.0
    assert one_run_p_value(m, 200, 170, 0.5, 1e-5) > one_run_p_value(m, 200, 170, 0.1, 1e-5)
    assert bounds[-1] <= max_epsilon_lower_bound(m, 1e-5) + 1e-9
    # Guesses of a truly ε-DP process (randomised response at ε=1) never prove more than 1 (at 95%, most seeds).
    rng = np.random.default_rng(1)
    proven = []
    for _ in range(20):
        included = rng.random(m) < 0.5
        p = np.e / (1 + np.e)
        signal = np.where(rng.random(m) < p, included, ~included)
        proven.append(one_run_audit(signal + rng.random(m) * 0.1, included, 0.0).epsilon_lower_bound)
    assert sum(b > 1.0 for b in proven) <= 2 and max(proven) > 0.1


# ------------------------------------------------------------------------------ a real run
def _fedgraph(*args, timeout=480):
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return subprocess.run(
        [sys.executable, "-m", "fedgraph.cli", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, "PATH": path}
    )


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory, text_cache):
    out = tmp_path_factory.mktemp("audit") / "run"
    result = _fedgraph(
        "simulate",
        "--out",
        str(out),
        "data.source=synthetic",
        "data.synthetic_shops=2",
        "data.synthetic_users_per_shop=[30, 50]",
        "data.synthetic_items_per_shop=[30, 50]",
        "train.rounds=2",
        "train.local_epochs=1",
        f"features.cache_dir='{text_cache}'",
        'evaluation.baselines=["popularity"]',
        "privacy.enabled=true",
        "privacy.target_epsilon=8",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def audited(dp_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit-out")
    doc = run_audit(dp_run, out, QUICK, say=lambda line: None)
    return doc, out


def test_report_json_validates_and_states_the_promise(audited, dp_run):
    doc, out = audited
    on_disk = json.loads((out / "audit.json").read_text())
    validate(on_disk)
    assert on_disk["status"] == doc["status"]
    assert doc["integrity"]["status"] == "ok"
    from fedgraph.federation.run_dir import RunDir
    from fedgraph.privacy import PrivacyLedger

    run = RunDir.at(dp_run)
    for shop in run.shop_names:
        last = [e for e in PrivacyLedger(run.privacy_dir(shop)).verify() if e["kind"] == "round"][-1]
        promised = doc["promise"]["shops"][shop]
        assert promised["epsilon"] == pytest.approx(last["epsilon"]) and promised["epsilon_by_accountant"] == pytest.approx(
            last["epsilon_by_accountant"]
        )
        assert len(promised["per_round"]) == 2
    for shop in doc["run"]["audited_shops"]:
        a = doc["attacks"]["shops"][shop]
        assert 0.0 <= a["membership"]["calibrated"]["auc"] <= 1.0
        # The lower bound may not exceed the claim on a correctly private run, and never exceeds what the canaries can prove.
        assert a["canary"]["epsilon_lower_bound"] <= min(a["canary"]["claimed_epsilon"], a["canary"]["max_possible_lower_bound"]) + 1e-9
        assert {"no_dp", "dp", "secagg_no_dp", "secagg_dp"} <= set(doc["attacks"]["leakage"]["shops"][shop])
        assert doc["verdict"][shop]["status"] == "not private"
    # the run's DP noise was seeded from its configuration (the simulation default): never CONSISTENT
    assert doc["status"] == "NOT PRIVATE"
    assert any(f.startswith("[not private]") and "deterministic_noise" in f for f in doc["flags"])
    # what else left the shops: a simulation shares its validation figures and reports ε/δ (its defaults)
    for shop in run.shop_names:
        status = {c["channel"]: c["status"] for c in doc["channels"][shop]}
        assert status["weights"] == "accounted" and status["evaluation"] == "outside the claim" and status["ε and δ"] == "outside the claim"
        assert "counts, timings, loss" not in status  # DP shops send none
    assert any(f.startswith("[outside the claim] evaluation") for f in doc["flags"])


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const pre = document.createElement('pre'); pre.id = 'audit-check';
  pre.textContent = JSON.stringify({images: imgs.length, rendered: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    status: (document.getElementById('status') || {}).textContent || '', top: document.body.firstElementChild.tagName});
  document.body.appendChild(pre);
});</script>"""


def test_report_renders_offline_in_a_headless_browser(audited, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium/chrome executable on PATH (CI installs Debian's chromium in .ci/run)")
    doc, out = audited
    html = (out / "audit.html").read_text()
    # Self-contained: no external resource of any kind.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert "<script" not in html.lower()
    assert "@media print" in html
    # The page as shipped, plus a probe script (the report's CSP allows no script, so allow inline for the probe only).
    probe = html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';").replace("</body>", CHECK + "</body>")
    page = tmp_path / "audit.html"
    page.write_text(probe)
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'<pre id="audit-check">(.*?)</pre>', result.stdout, re.S)
    assert match, f"page did not load: {result.stderr[-2000:]}"
    check = json.loads(match.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    assert check["images"] >= 4 and check["rendered"] == check["images"]
    assert doc["status"].split()[0] in check["status"]


def _copy(run, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("audit*", "flower*"))
    return target


def test_truncated_ledger_is_flagged_at_the_top(dp_run, tmp_path):
    from fedgraph.federation.run_dir import RunDir

    run = _copy(dp_run, tmp_path, "truncated")
    shop = RunDir.at(run).shop_names[0]
    ledger = run / "privacy" / shop / "ledger.jsonl"
    ledger.write_text("".join(ledger.read_text().splitlines(keepends=True)[:-1]))
    doc = run_audit(run, tmp_path / "out1", AuditOptions(attacks=False), say=lambda line: None)
    assert doc["status"] == "TAMPERED" and any("truncated" in f for f in doc["flags"])
    html = (tmp_path / "out1" / "audit.html").read_text()
    body = html[html.index("<body>") :]
    assert body.index("TAMPERED") < body.index("The run</h2>")
    validate(json.loads((tmp_path / "out1" / "audit.json").read_text()))

    # Truncated *consistently* (head rewritten to match): the ledger verifies, the server's history still disagrees.
    run2 = _copy(dp_run, tmp_path, "rewound")
    ledger = run2 / "privacy" / shop / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)[:-1]
    ledger.write_text("".join(lines))
    (ledger.parent / "ledger.head.json").write_text(json.dumps({"count": len(lines), "mac": json.loads(lines[-1])["mac"]}))
    doc = run_audit(run2, tmp_path / "out2", AuditOptions(attacks=False), say=lambda line: None)
    assert doc["status"] == "TAMPERED" and any("truncated or rolled back" in f for f in doc["flags"])


def test_config_edited_after_the_run_is_flagged(dp_run, tmp_path):
    run = _copy(dp_run, tmp_path, "edited")
    config = run / "config.toml"
    config.write_text(config.read_text().replace("target_epsilon = 8.0", "target_epsilon = 1.0"))
    from fedgraph.audit.cli import add_audit_command, run_audit_command

    parser = argparse.ArgumentParser()
    add_audit_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", str(run), "--out", str(tmp_path / "out"), "--no-attacks"])
    assert run_audit_command(args) == 4
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert doc["status"] == "TAMPERED"
    assert any("config.toml was edited" in f and "target_epsilon" in f for f in doc["flags"])
    assert any("ledger plan has target_epsilon=8.0" in f for f in doc["flags"])


def test_untouched_copy_is_not_flagged(dp_run, tmp_path):
    run = _copy(dp_run, tmp_path, "clean")
    doc = run_audit(run, tmp_path / "out", AuditOptions(attacks=False), say=lambda line: None)
    assert doc["integrity"]["status"] == "ok" and doc["status"] == "NOT PRIVATE"  # seeded noise: not private even unattacked
    assert not [f for f in doc["flags"] if f.startswith("[tampered]")]


def test_a_records_only_audit_does_not_overwrite_a_full_one(dp_run, tmp_path):
    """Issue 13.13: `--no-attacks` silently replaced an earlier audit that had run the attacks."""
    run = _copy(dp_run, tmp_path, "full")
    out = tmp_path / "out"
    out.mkdir()
    full = {"status": "CONSISTENT", "attacks": {"shops": {"shop-00000": {"membership": {}}}}}
    (out / "audit.json").write_text(json.dumps(full))
    with pytest.raises(FileExistsError, match=r"already holds an audit with attacks.*--out"):
        run_audit(run, out, AuditOptions(attacks=False), say=lambda line: None)
    assert json.loads((out / "audit.json").read_text()) == full


def test_a_run_without_dp_says_it_has_no_ledger_not_not_verified_none():
    from fedgraph.audit.core import _ledger_state

    assert _ledger_state({"verified": False, "error": None}) == "no ledger (this shop did not train with DP)"
    assert _ledger_state({"verified": True}) == "verified, empty"
    assert _ledger_state({"verified": False, "error": "hash chain broken at entry 3"}) == "NOT VERIFIED: hash chain broken at entry 3"


def test_a_non_dp_report_has_no_empty_epsilon_chart_and_no_blank_header_row():
    from fedgraph.audit.render import _epsilon_plot, _table

    assert "<thead>" not in _table(["", ""], [["run directory", "runs/x"]])
    assert "<thead><tr><th>shop</th>" in _table(["shop", "ε"], [["a", 1.0]])
    text = _epsilon_plot({"shops": {"a": {"ledger": "no ledger (this shop did not train with DP)"}}})
    assert "<img" not in text and "no ε chart" in text


# ------------------------------------------------------------------------------ verdicts (issue 12.1, 12.10)
def _promise(epsilon, deterministic):
    return {"shops": {"s": {"epsilon": epsilon}}, "configured": {"deterministic_noise": deterministic}}


def _attacks(epsilon, canaries, lower_bound=0.5, auc=0.52):
    from fedgraph.audit.stats import dp_max_auc, max_epsilon_lower_bound

    fig = {"auc": auc, "auc_ci95": [auc - 0.04, auc + 0.04]}
    return {
        "membership": {"audited_epsilon": epsilon, "dp_max_auc": dp_max_auc(epsilon, 1e-5), "loss_threshold": fig, "calibrated": fig},
        "canary": {
            "canaries": canaries,
            "delta": 1e-5,
            "epsilon_lower_bound": lower_bound,
            "audited_epsilon": epsilon,
            "max_possible_lower_bound": max_epsilon_lower_bound(canaries, 1e-5),
        },
    }


def test_a_run_with_seeded_noise_is_not_private_never_consistent():
    from fedgraph.audit.core import _verdict

    v = _verdict("s", _promise(2.0, True), _attacks(2.0, 1000), tampered=False, private=True)
    assert v["status"] == "not private" and "deterministic_noise" in v["summary"]
    assert _verdict("s", _promise(2.0, False), _attacks(2.0, 1000), tampered=False, private=True)["status"] == "consistent"


def test_a_claim_beyond_what_the_audit_can_refute_is_not_called_consistent():
    from fedgraph.audit.core import _verdict, canaries_needed

    v = _verdict("s", _promise(8.0, False), _attacks(8.0, 100), tampered=False, private=True)
    assert v["status"] == "not refutable at this audit size"
    assert "100 canaries can prove at most ε ≈ 3.05" in v["summary"] and "no one-run canary audit" in v["summary"]
    needed, bound = canaries_needed(4.0, 1e-5)
    assert needed == 500 and bound > 4.0
    # at ε = 4 a membership attack could still refute (it would need AUC above 0.982)
    assert _verdict("s", _promise(4.0, False), _attacks(4.0, 100), tampered=False, private=True)["status"] == "consistent"


def test_channels_beside_the_weights_are_listed_and_exact_ones_are_outside_the_claim():
    """Issue 12.10: the audit attacked only the weights. What else the server recorded from each
    shop (counts, timings, loss, ε/δ, evaluation figures) is listed per shop; an exact figure on
    the shop's customers is outside the claim, a data-independent one is public."""
    from fedgraph.audit.channels import released_channels

    history = {
        "rounds": [
            {"round": 0, "eval": {"a": {"recall@20": 0.1, "users": 40}}},
            {
                "round": 1,
                "train": {
                    "a": {"epsilon": 2.0, "delta": 1e-5, "target-epsilon": 8, "ledger-seq": 1, "shop-weight": 1},
                    "b": {"target-epsilon": 8, "ledger-seq": 1, "shop-weight": 1},
                },
                "eval": {"a": {"recall@20": 0.2, "users": 40}},
            },
            {"round": 2, "train": {"b": {"num-examples": 37, "train_seconds": 1.5}}},
        ]
    }
    found = released_channels(history, ["a", "b"], private=True)
    by = {shop: {c["channel"]: c for c in chans} for shop, chans in found.items()}
    assert by["a"]["weights"]["status"] == "accounted" and by["a"]["weights"]["rounds"] == 1
    assert by["a"]["ε and δ"]["status"] == "outside the claim" and by["a"]["ε and δ"]["keys"] == ["delta", "epsilon"]
    assert by["a"]["evaluation"]["status"] == "outside the claim" and by["a"]["evaluation"]["rounds"] == 2
    assert by["b"]["budget bookkeeping"]["status"] == "public" and "evaluation" not in by["b"] and "ε and δ" not in by["b"]
    assert by["b"]["counts, timings, loss"]["keys"] == ["num-examples", "train_seconds"]
    assert released_channels(history, ["a"], private=False)["a"][0]["status"] == "outside the claim"  # no DP: the weights too


def test_the_audits_user_subsets_and_canaries_keep_every_users_own_search_queries(planted_shop):
    """Issue 14.4: ShopData now carries each user's queries; the audit's data edits keep them aligned."""
    from dataclasses import replace

    import numpy as np

    from fedgraph.audit.training import select_users, with_canaries

    data = planted_shop()
    counts = np.zeros(data.num_users, dtype=np.int64)
    counts[:6] = [0, 2, 1, 0, 3, 1]
    text = np.arange(counts.sum() * 4, dtype=np.float32).reshape(-1, 4)
    data = replace(data, query_indptr=np.concatenate([[0], np.cumsum(counts)]), query_text=text)
    picked = select_users(data, np.array([4, 1]))
    np.testing.assert_array_equal(picked.queries(0), data.queries(4))
    np.testing.assert_array_equal(picked.queries(1), data.queries(1))
    grown = with_canaries(picked, [np.array([0, 1, 2])])
    assert grown.num_users == 3 and len(grown.queries(2)) == 0 and len(grown.query_text) == 5

"""Command-line polish (issue 13.11/13.15/13.16)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedgraph.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_distribution_has_a_name_of_its_own():
    """`fedgraph` on the package registry is an unrelated library (FedGraph 0.2.5)."""
    import fedgraph

    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name != "fedgraph" and name == fedgraph.DISTRIBUTION
    assert f"pip install {name}" not in (ROOT / "README.md").read_text() or "cannot be installed" in (ROOT / "README.md").read_text()


def test_version_flag(capsys):
    import fedgraph

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedgraph {fedgraph.version()}"


def test_demo_keys_are_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "-q", "demo/ca/ca.key"], cwd=ROOT)
    assert out.returncode == 0, "demo/ (CA and shop private keys written by make_demo) is not in .gitignore"


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_a_config_that_is_a_directory_or_not_utf8_is_a_clear_error(tmp_path, capsys, kind):
    path = tmp_path / "cfg.toml"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe[train]\nrounds = 1\n")
    assert main(["simulate", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and ("is a directory" in err or "not UTF-8" in err) and "Traceback" not in err


def test_overrides_may_come_after_options(tmp_path, monkeypatch):
    import fedgraph.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "_cmd_simulate", lambda args: seen.setdefault("overrides", args.overrides) and 0)
    main(["simulate", "train.rounds=1", "--out", str(tmp_path / "x"), "data.seed=3"])
    assert seen["overrides"] == ["train.rounds=1", "data.seed=3"]


def test_a_closed_pipe_is_not_a_traceback(monkeypatch, tmp_path):
    """`fedgraph client status | head`: the reader went away; stop quietly (exit 0, like `cat`)."""
    import fedgraph.cli as cli

    def write_to_closed_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_cmd_simulate", write_to_closed_pipe)
    monkeypatch.setattr(cli, "_silence_stdout", lambda: None)  # keep pytest's capture intact
    assert main(["simulate", "--out", str(tmp_path / "x")]) == 0


def test_simulate_help_teaches_privacy_and_lists_every_baseline(capsys):
    from fedgraph.baselines import BASELINES

    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    for word in ("privacy.enabled", "configs/dp.toml", "privacy.secure_aggregation", "privacy.target_epsilon"):
        assert word in text, word
    for name in BASELINES:
        assert name in text, name


def test_console_lines_carry_no_colour_codes_and_count_in_words():
    from fedgraph.console import plural, strip_ansi

    assert strip_ansi("\x1b[92mINFO \x1b[0m:      aggregate_train") == "INFO :      aggregate_train"
    assert plural(1, "shop") == "1 shop" and plural(3, "shop") == "3 shops" and plural(0, "shop") == "0 shops"


def test_flower_lines_reach_the_console_and_logs_without_colour_codes():
    from fedgraph.simulation import _forward_flower_line

    said = []
    _forward_flower_line("\x1b[91mERROR \x1b[0m:     Exit Code: 700", said.append)
    assert said == ["flower: ERROR :     Exit Code: 700"]


def test_failed_shops_are_named_not_node_numbers():
    from fedgraph.federation.rounds import _name_failures

    names = {7: "germany"}
    assert _name_failures(["node 7: out of memory", "node 9: timeout"], names) == ["germany: out of memory", "node 9: timeout"]


def test_reading_a_graph_does_not_import_torch():
    """`fedgraph graph` reads SQLite; importing torch cost 2.9 s per query."""
    code = "import sys; import fedgraph.cli as c; from fedgraph.graph import GraphStore, export_graphml; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_outputs_get_the_usual_file_mode_and_only_private_files_are_0600(tmp_path):
    import os

    from fedgraph.atomic import atomic_path, atomic_write_text

    old = os.umask(0o022)
    try:
        public = atomic_write_text(tmp_path / "metrics.json", "{}")
        with atomic_path(tmp_path / "secret.key", private=True) as tmp:
            tmp.write_text("k")
    finally:
        os.umask(old)
    assert oct(public.stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "secret.key").stat().st_mode & 0o777) == oct(0o600)


def test_an_export_into_a_missing_directory_is_refused_not_created(tmp_path, capsys, monkeypatch):
    import fedgraph.cli as cli

    class Store:
        pass

    monkeypatch.setattr(cli, "_open_store", lambda path: Store())
    target = tmp_path / "nonexistent-dir" / "x.graphml"
    code = main(["graph", str(tmp_path), "export", "uk-1", "--graphml", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "nonexistent-dir" in err and "does not exist" in err
    assert not target.parent.exists()


def test_every_data_error_exits_with_the_same_code(tmp_path, capsys):
    events = tmp_path / "events.csv"
    events.write_text("event_id,shop,user,item,timestamp,kind,weight\ne1,s1,u1,i1,not-a-time,view,1\n")
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("shop,item,title,description,category,price\ns1,i1,Mug,,kitchen,2.5\n")
    bad = main(["simulate", "--out", str(tmp_path / "a"), "data.source=files", f"data.events='{events}'", f"data.catalog='{catalog}'"])
    missing = main(
        [
            "simulate",
            "--out",
            str(tmp_path / "b"),
            "data.source=files",
            f"data.events='{tmp_path / 'nope.csv'}'",
            f"data.catalog='{catalog}'",
        ]
    )
    assert bad == missing == 2, capsys.readouterr().err


def test_the_generated_flower_app_is_a_valid_flower_app(tmp_path):
    """Issue 13.14: README says RUN/flower/app is what `flwr run` takes; it must name real components."""
    import importlib

    from fedgraph.flower_app import write_app

    app = tomllib.loads(write_app(tmp_path, secure_aggregation=False).read_text())["tool"]["flwr"]["app"]
    assert "run-dir" in app["config"]
    for ref in app["components"].values():
        module, attr = ref.split(":")
        assert getattr(importlib.import_module(module), attr) is not None


def test_the_audit_leakage_tables_are_readable():
    """Issue 13.13: the leakage table had 11 dense columns with repeated names ("recall" and
    "chance precision" twice). Now: one table about items and one about categories, each with
    unique headers, at most six columns, and each figure beside its chance level."""
    import re

    from fedgraph.audit.render import leakage_section

    view = {
        "label": "the shop's update (no DP)",
        "item_precision": 0.61,
        "item_recall": 0.52,
        "item_base_rate": 0.3,
        "item_auc": 0.71,
        "bestseller_precision": 0.4,
        "bestseller_base_rate": 0.2,
        "category_precision": 0.8,
        "category_recall": 0.5,
        "category_base_rate": 0.4,
        "category_spearman": 0.33,
    }
    html = leakage_section({"method": "shadow shops", "shops": {"uk-1": {"plain": view, "dp": {**view, "label": "under DP"}}}})
    tables = re.findall(r"<table>.*?</table>", html, flags=re.S)
    assert len(tables) == 2
    for table in tables:
        headers = re.findall(r"<th>(.*?)</th>", table)
        assert len(headers) == len(set(headers)) <= 6, headers
        assert len(re.findall(r"<tr>", table)) == 3  # header + one row per view
    assert "0.61 (chance 0.3)" in html and "0.8 (chance 0.4)" in html

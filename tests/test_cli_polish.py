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
    from fedgraph.config import BASELINES

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
    from types import SimpleNamespace

    from fedgraph.federation.rounds import _name_failures

    run = SimpleNamespace(shop_names=["uk-1", "germany"])
    names = {7: "germany"}
    assert _name_failures(["node 7: out of memory", "node 9: timeout"], names) == ["germany: out of memory", "node 9: timeout"]

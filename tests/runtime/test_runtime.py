"""One launcher for both engines (issue 17.1): fedgraph.runtime starts, waits for and submits to
a SuperLink the same way for ``fedgraph simulate`` and ``fedgraph server start``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedgraph.runtime import processes, superlink

LIBRARY = Path(__file__).resolve().parents[2] / "fedgraph"


def test_submit_streams_clean_lines_to_the_log_and_the_caller(tmp_path):
    seen: list[str] = []
    script = "import sys; print('\\x1b[32m[fedgraph] round 1\\x1b[0m'); print('done'); sys.exit(3)"
    code = superlink.submit(
        [sys.executable, "-c", script], env=processes.flower_env(tmp_path), log_path=tmp_path / "run.log", on_line=seen.append
    )
    assert code == 3
    assert seen == ["[fedgraph] round 1", "done"]
    log = (tmp_path / "run.log").read_text()
    assert log.startswith("$ ") and "[fedgraph] round 1\ndone\n" in log and "\x1b" not in log


def test_wait_healthy_names_the_console_when_the_superlink_dies(tmp_path):
    console = tmp_path / "console.log"
    child = processes.spawn(
        [sys.executable, "-c", "print('port 1 in use'); raise SystemExit(4)"], env=processes.flower_env(tmp_path), log_path=console
    )
    child.wait(timeout=30)
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 4 while starting; see .*console.log.*port 1 in use"):
        superlink.wait_healthy(child, f"http://127.0.0.1:{processes.free_port()}/health", console=console, timeout=5, error=RuntimeError)


def test_the_cli_config_is_insecure_or_verified(tmp_path):
    import tomllib

    plain = tomllib.loads(superlink.write_cli_config(tmp_path / "a", "127.0.0.1:9093").read_text())
    assert plain["superlink"] == {"default": "fedgraph", "fedgraph": {"address": "127.0.0.1:9093", "insecure": True}}
    tls = tomllib.loads(superlink.write_cli_config(tmp_path / "b", "shop.example:9093", root_certificates=tmp_path / "ca.pem").read_text())
    assert tls["superlink"]["fedgraph"] == {"address": "shop.example:9093", "root-certificates": str(tmp_path / "ca.pem")}


def test_both_engines_use_the_one_launcher():
    for module in ("runtime/simulation_engine.py", "deploy/server.py"):
        source = (LIBRARY / module).read_text()
        for call in (
            "processes.spawn(",
            "superlink.write_cli_config(",
            "superlink.wait_healthy(",
            "superlink.submit(",
            "processes.stop_tree(",
        ):
            assert call in source, (module, call)
        assert "Popen(" not in source and "import httpx" not in source and "strip_ansi" not in source, module

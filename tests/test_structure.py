"""The library's structure (issue 17): one source for each default, one spelling of each name."""

from __future__ import annotations

import ast
import inspect
from dataclasses import fields
from pathlib import Path

from fedgraph.config import ModelConfig, TrainConfig
from fedgraph.models.interest_model import InterestModel
from fedgraph.training import TrainSettings

LIBRARY = Path(__file__).resolve().parent.parent / "fedgraph"


def test_train_settings_defaults_are_the_configs_defaults():
    config = {f.name: f.default for f in fields(TrainConfig)}
    differ = {f.name: (f.default, config[f.name]) for f in fields(TrainSettings) if f.name in config and f.default != config[f.name]}
    assert not differ, f"TrainSettings vs TrainConfig defaults: {differ}"


def test_the_models_defaults_are_the_configs_defaults():
    signature = inspect.signature(InterestModel.__init__).parameters
    config = {f.name: f.default for f in fields(ModelConfig)}
    differ = {n: (p.default, config[n]) for n, p in signature.items() if n in config and p.default != config[n]}
    assert not differ, f"InterestModel vs ModelConfig defaults: {differ}"


def test_the_private_prefix_is_spelled_once():
    """``"local."`` is :data:`fedgraph.models.interest_model.LOCAL_PREFIX`; nothing else spells it."""
    spelled = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("local."):
                spelled.append(f"{path.relative_to(LIBRARY)}:{node.lineno}")
    assert len(spelled) == 1 and spelled[0].startswith("models/interest_model.py:"), spelled


def test_no_import_cycle_and_no_private_import_across_packages():
    import subprocess
    import sys

    tool = LIBRARY.parent.parent / "shared" / "tools" / "archcheck.py"
    if not tool.exists():
        import pytest

        pytest.skip("archcheck is steering-side context, not part of a clean clone")
    done = subprocess.run([sys.executable, str(tool)], cwd=LIBRARY.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr  # 1 on a cycle, a private import, no linter or a fmt: skip marker


def test_the_model_signature_names_the_text_encoder(monkeypatch):
    """Issue 17.2: the text encoder's width and weights were not part of the model signature, so
    shops embedding item text with different encoders would have federated silently."""
    from fedgraph import text
    from fedgraph.config import RunConfig
    from fedgraph.deploy.shop_state import model_signature, model_signature_digest

    config = RunConfig()
    ours = model_signature_digest(config)
    assert '"text_encoder"' in model_signature(config) and '"dim": 384' in model_signature(config)
    text.encoder_identity.cache_clear()
    monkeypatch.setattr(text, "model_fingerprint", lambda model_dir: "another-encoder")
    assert model_signature_digest(config) != ours
    text.encoder_identity.cache_clear()


def test_simulation_and_deployment_write_the_same_flower_app(tmp_path):
    """Issue 17.1: two app pyproject templates; now one writer for both engines."""
    import tomllib

    from fedgraph import flower_app

    for secure in (False, True):
        path = flower_app.write_app(tmp_path / str(secure), secure_aggregation=secure)
        app = tomllib.loads(path.read_text())["tool"]["flwr"]["app"]
        assert app["components"] == {
            "serverapp": "fedgraph.apps.server_app:app",
            "clientapp": "fedgraph.apps.client_app:secagg_app" if secure else "fedgraph.apps.client_app:app",
        }
        assert set(app["config"]) == {"run-dir", "shops", "fedgraph-model", "secagg-masks"}
    for module in ("fedgraph/runtime/simulation_engine.py", "fedgraph/deploy/server.py"):
        source = (LIBRARY.parent / module).read_text()
        assert "[tool.flwr.app" not in source and "flower_app.write_app" in source, module


def test_data_sources_live_in_data_and_a_new_one_is_one_entry(monkeypatch):
    """Issue 17.4: the data-source selection was an if-chain in simulation.py."""
    import pandas as pd

    from fedgraph import simulation
    from fedgraph.config import RunConfig
    from fedgraph.data.sources import SOURCES, Dataset, load_dataset

    assert set(SOURCES) == {"online_retail", "synthetic", "files"}
    assert simulation.load_dataset is load_dataset
    frame = pd.DataFrame()
    monkeypatch.setitem(SOURCES, "warehouse", lambda config: Dataset(frame, frame, {"source": "warehouse"}))
    config = RunConfig.load(overrides=["data.source=warehouse"])
    assert load_dataset(config).description == {"source": "warehouse"}


def test_the_library_never_imports_the_app_folders():
    """Issue 17.4: deploy.daemon imported clients.client_app (library -> app) while the ClientApp
    imported deploy.shop_app. The Flower apps live in fedgraph.apps; clients/ and server/ only
    re-export them, so Flower references to either resolve to the same objects."""
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(LIBRARY)}: {n}" for n in names if n.split(".")[0] in ("clients", "server")]
    assert not offenders, offenders
    import clients.client_app
    import server.server_app
    from fedgraph.apps import client_app, server_app

    assert clients.client_app.app is client_app.app and clients.client_app.secagg_app is client_app.secagg_app
    assert server.server_app.app is server_app.app


def test_the_distribution_installs_one_top_level_package():
    """Issue 17.4: ``clients`` and ``server`` were installed as top-level packages, generic names
    that clash with any other project's. The wheel holds ``fedgraph`` only; the two folders stay in
    the source tree as thin re-exports for ``flwr run`` from a checkout."""
    import tomllib

    from setuptools import find_packages

    root = LIBRARY.parent
    found = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(root), include=found.get("include", ["*"]), exclude=found.get("exclude", ()))
    assert {p.split(".")[0] for p in packages} == {"fedgraph"}, sorted(packages)


# Root test files that test no single top-level module: the layout as a whole, and the scripts
# under simulations/.
_WHOLE_TREE_TESTS = {"test_structure.py", "test_benchmarks.py"}


def test_the_tests_mirror_the_package_layout():
    """Issue 17: ``tests/<subpackage>/`` tests ``fedgraph/<subpackage>/``, and a test file at the
    top of ``tests/`` is named for a top-level module (``test_simulation_start.py`` tests
    ``fedgraph/simulation.py``), so a module's tests are found where the module is."""
    tests = Path(__file__).resolve().parent
    misplaced = []
    for path in sorted(tests.rglob("test_*.py")):
        relative = path.relative_to(tests)
        if len(relative.parts) > 1:
            if not (LIBRARY / relative.parent).is_dir():
                misplaced.append(f"{relative}: fedgraph/{relative.parent}/ does not exist")
        elif path.name not in _WHOLE_TREE_TESTS:
            words = path.stem.removeprefix("test_").split("_")
            if not any((LIBRARY / f"{'_'.join(words[:n])}.py").is_file() for n in range(1, len(words) + 1)):
                misplaced.append(f"{relative}: no fedgraph/<module>.py matches its name")
    assert not misplaced, misplaced


def test_test_files_do_not_import_from_each_other():
    """Shared test data comes from the factory fixtures in ``tests/conftest.py``; a test module
    importing another (or a helper module beside it) couples files that run on different workers."""
    tests = Path(__file__).resolve().parent
    local = {p.stem for p in tests.rglob("*.py")} | {"tests", "conftest"}
    imports = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            imports += [f"{path.relative_to(tests)}:{node.lineno} {n}" for n in names if n.split(".")[0] in local]
    assert not imports, imports

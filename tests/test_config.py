import tomllib
from pathlib import Path

import pytest

from fedgraph.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_default_toml_equals_builtin_defaults():
    assert tomllib.loads((ROOT / "configs" / "default.toml").read_text()) == RunConfig().to_dict()


@pytest.mark.parametrize("name", ["default", "smoke", "synthetic", "fedprox"])
def test_shipped_configs_load(name):
    RunConfig.load(ROOT / "configs" / f"{name}.toml")


def test_overrides_are_typed():
    c = RunConfig.load(None, ["train.rounds=3", "train.lr=1", "federation.strategy=fedprox", "evaluation.baselines=popularity,local"])
    assert c.train.rounds == 3 and c.train.lr == 1.0 and c.federation.strategy == "fedprox"
    assert c.evaluation.baselines == ["popularity", "local"]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.rounds=x", "train.rounds must be int"),
        ("train.epochs=3", "unknown key train.epochs; keys of [train] are"),
        ("trian.rounds=3", "unknown section [trian]"),
        ("rounds=3", "must look like section.key=value"),
        ("federation.strategy=fedsgd", "federation.strategy must be fedavg, fedprox or fedadam"),
        ("train.rounds=0", "train.rounds must be >= 1"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        RunConfig.load(None, [override])
    assert fragment in str(info.value)


def test_bad_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nrounds = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        RunConfig.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "missing.toml")


def test_roundtrip(tmp_path):
    c = RunConfig.load(None, ["train.rounds=4", "data.source=synthetic"])
    c.save(tmp_path / "c.toml")
    assert RunConfig.load(tmp_path / "c.toml") == c

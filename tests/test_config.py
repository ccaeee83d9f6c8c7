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
        ("federation.strategy=fedsgd", "federation.strategy must be one of fedadam, fedavg, fedprox"),
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


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.device=gpu", "train.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        ("data.uk_shards=0", "data.uk_shards must be >= 1, got 0"),
        ("data.max_users_per_shop=-5", "data.max_users_per_shop must be >= 0 (0 = all users), got -5"),
        ("train.lr=1e400", "train.lr must be a finite number, got inf"),
        ("model.dim=0", "model.dim must be >= 1, got 0"),
        ("model.dim=-4", "model.dim must be >= 1, got -4"),
        ("model.hidden=0", "model.hidden must be >= 1, got 0"),
        ("data.min_user_items=0", "data.min_user_items must be >= 1, got 0"),
        ("features.neighbours=-1", "features.neighbours must be >= 1, got -1"),
        ("features.hops=-1", "features.hops must be >= 0"),
        ("evaluation.history=0", "evaluation.history must be >= 1"),
        ("federation.round_timeout_s=0", "federation.round_timeout_s must be > 0"),
        ("data.synthetic_users_per_shop=[500,20]", "data.synthetic_users_per_shop must be [low, high] with 1 <= low <= high"),
        ("graph.top_k_items=0", "graph.top_k_items must be >= 1"),
    ],
)
def test_out_of_range_values_are_refused_before_any_work_with_the_key_the_value_and_the_range(override, fragment):
    """Issue 13.9: each of these reached a traceback (or ran) before."""
    with pytest.raises(ConfigError) as info:
        RunConfig.load(None, [override])
    assert fragment in str(info.value)


def test_a_cuda_device_on_a_machine_without_one_is_refused_up_front(monkeypatch):
    import torch

    from fedgraph.config import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train.device=cuda: this machine has no CUDA device.*train.device=auto"):
        check_device("cuda")
    check_device("auto")
    check_device("cpu")

"""Secure aggregation with Flower's SecAgg+: equals FedAvg, survives a drop-out, refuses bad settings."""

import pytest

from fedgraph.config import ConfigError, RunConfig
from fedgraph.federation.run_dir import RunDir
from fedgraph.federation.secure_aggregation import check_settings, quantisation_error_bound

# Three synthetic shops of 47, 36 and 30 users (batch 32: q = 0.68, 0.89, 1.0). With σ = 1.5
# and ε ≤ 4.3 the 30-user shop can afford one round, the others two: in round 2 it refuses
# to train *after* SecAgg+ has set up its keys, which is a real mid-protocol drop-out.
SHOPS = (
    "data.source=synthetic",
    "data.synthetic_shops=3",
    "data.synthetic_users_per_shop=[30, 60]",
    "data.synthetic_items_per_shop=[40, 80]",
    "train.local_epochs=1",
    "evaluation.baselines=['popularity']",
    "privacy.enabled=true",
    "privacy.noise_multiplier=1.5",
    "privacy.target_epsilon=4.3",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_cache, run_fedgraph):
    base = tmp_path_factory.mktemp("secagg")
    cache = f"features.cache_dir='{text_cache}'"
    secure = run_fedgraph("simulate", "--out", str(base / "secure"), *SHOPS, cache, "train.rounds=2", "privacy.secure_aggregation=true")
    assert secure.returncode == 0, secure.stdout + secure.stderr
    plain = run_fedgraph("simulate", "--out", str(base / "plain"), *SHOPS, cache, "train.rounds=1")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    return base, secure.stdout


def test_secure_sum_equals_fedavg_within_quantisation(runs):
    base, _ = runs
    secure = RunDir.at(base / "secure").load_checkpoint(1)["state_dict"]
    plain = RunDir.at(base / "plain").load_checkpoint(1)["state_dict"]
    assert secure.keys() == plain.keys()
    worst = max(float((secure[k] - plain[k]).abs().max()) for k in secure)
    bound = quantisation_error_bound(RunConfig(), num_shops=3)
    assert worst <= bound, (worst, bound)
    before = RunDir.at(base / "plain").new_model().state_dict()
    assert max(float((plain[k] - before[k]).abs().max()) for k in plain) > 100 * bound  # training moved the model


def test_a_round_survives_a_shop_dropping_out(runs):
    base, stdout = runs
    assert "round 1/2 | shops 3/3 | secure aggregation (SecAgg+)" in stdout
    assert "round 2/2 | shops 2/3 | secure aggregation (SecAgg+)" in stdout
    assert "shop shop-00002: one more round would exceed its privacy budget" in stdout
    history = RunDir.at(base / "secure").read_history()
    assert sorted(history["rounds"][-1]["train"]) == ["shop-00000", "shop-00001"]
    assert RunDir.at(base / "secure").checkpoint_rounds() == [1, 2]


def _config(**privacy):
    cfg = RunConfig()
    for k, v in privacy.items():
        setattr(cfg.privacy, k, v)
    return cfg


def test_settings_that_would_halt_secagg_are_refused_up_front():
    with pytest.raises(ConfigError, match="odd"):
        RunConfig.load(overrides=["privacy.secure_aggregation=true", "privacy.secagg_num_shares=4"])
    with pytest.raises(ConfigError, match="below privacy.secagg_num_shares"):
        RunConfig.load(overrides=["privacy.secagg_reconstruction_threshold=3"])
    with pytest.raises(ConfigError, match="use one of the two"):
        RunConfig.load(overrides=["privacy.secure_aggregation=true", "privacy.client_dp=fixed"])
    with pytest.raises(ConfigError, match="at least 2 shops"):
        check_settings(_config(secure_aggregation=True), num_shops=1)
    with pytest.raises(ConfigError, match="neighbours"):
        check_settings(_config(secure_aggregation=True, secagg_num_shares=7, secagg_reconstruction_threshold=5), num_shops=3)
    check_settings(_config(secure_aggregation=True), num_shops=3)


def test_masks_use_the_whole_seed_in_the_shops_and_the_server():
    """Flower 1.42 folds each 32-byte mask seed to 32 bits (issue #7522): two seeds with the same
    fold gave the same mask. fedgraph installs a generator that uses the whole seed, where Flower's
    shops (secaggplus_mod) and server (SecAggPlusWorkflow) look it up."""
    import importlib
    import types

    import numpy as np

    from fedgraph.federation import secagg_masks

    assert secagg_masks.install() == secagg_masks.FULL_SEED  # flwr 1.42 has the flaw, so the guard replaced it
    for name in secagg_masks.MODULES:
        module = importlib.import_module(name)
        assert isinstance(module, types.ModuleType) and module.pseudo_rand_gen is secagg_masks.full_seed_masks, name
    a, b = bytes(32), (1).to_bytes(4, "little") * 2 + bytes(24)
    ma, mb = (secagg_masks.full_seed_masks(s, 1 << 30, [(1000,), ()]) for s in (a, b))
    assert not np.array_equal(ma[0], mb[0]) and ma[1].shape == () and ma[0].dtype == np.int64
    assert all(np.array_equal(x, y) for x, y in zip(ma, secagg_masks.full_seed_masks(a, 1 << 30, [(1000,), ()])))  # same seed, same mask
    assert 0 <= ma[0].min() and ma[0].max() < 1 << 30 and abs(ma[0].mean() / (1 << 30) - 0.5) < 0.05
    assert not secagg_masks.folds_seeds(secagg_masks.full_seed_masks)


def test_secure_aggregation_refuses_a_strategy_it_would_not_run():
    """Issue 17.3: with SecAgg+ the round aggregates the masked sum with FedAvg whatever
    federation.strategy says; strategy=fedadam was accepted and silently ran as FedAvg."""
    from fedgraph.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="fedadam.*secure aggregation|secure aggregation.*fedadam"):
        RunConfig.load(overrides=["privacy.secure_aggregation=true", "federation.strategy=fedadam"])
    RunConfig.load(
        overrides=["privacy.secure_aggregation=true", "federation.strategy=fedprox"]
    )  # FedProx: the shops' term, FedAvg at the server


def test_a_secure_aggregation_setup_that_cannot_survive_one_lost_shop_is_named_at_server_start():
    """Issue 13.2: with the deployment default (SecAgg+) and two shops, one dead daemon halted the
    whole run ("threshold 2"), with no word at start. The server now says so before any round."""
    from fedgraph.config import RunConfig
    from fedgraph.federation.secure_aggregation import dropout_warning, shops_that_may_drop

    two = RunConfig.load(overrides=["privacy.secure_aggregation=true", "federation.min_train_shops=2"])
    assert shops_that_may_drop(two, 2) == 0 and shops_that_may_drop(two, 3) == 1 and shops_that_may_drop(two, 10) == 1
    warning = dropout_warning(two, 2)
    assert warning and "cannot lose a single shop" in warning and "at least 3 shops" in warning
    assert dropout_warning(two, 3) is None

"""Client-level DP at the server: Flower's wrappers with equal shop weights, and their ledger."""

import numpy as np
import pytest
from flwr.app import ArrayRecord

from fedgraph.config import RunConfig
from fedgraph.federation.server_strategy import build_strategy
from fedgraph.privacy import epsilon
from fedgraph.privacy.client_level import UNIFORM_WEIGHT_KEY, ServerPrivacyLedger


def _config(**privacy):
    cfg = RunConfig()
    for k, v in privacy.items():
        setattr(cfg.privacy, k, v)
    return cfg


@pytest.fixture
def aggregate(train_reply):
    """Aggregates one round of ``updates`` from shops of ``users`` users with ``strategy``."""

    def run(strategy, updates, users):
        strategy.current_arrays = ArrayRecord([np.zeros(2, dtype=np.float32)])  # the global model it sent
        replies = [
            train_reply(np.asarray(u, dtype=np.float32), {"num-examples": n, UNIFORM_WEIGHT_KEY: 1.0}, i + 1)
            for i, (u, n) in enumerate(zip(updates, users))
        ]
        arrays, _ = strategy.aggregate_train(1, replies)
        return arrays.to_numpy_ndarrays()[0]

    return run


def test_without_client_dp_shops_are_weighted_by_users(aggregate):
    strategy = build_strategy(RunConfig(), num_shops=2)
    out = aggregate(strategy, [[3.0, 0.0], [0.0, 3.0]], [1, 2])
    assert out == pytest.approx([1.0, 2.0])


def test_fixed_clipping_averages_clipped_updates_with_equal_weights(aggregate):
    strategy = build_strategy(_config(client_dp="fixed", client_noise_multiplier=0.0, client_clipping_norm=1.0), num_shops=2)
    # a big shop (1,000 users) gets no more say than a small one, and each update is clipped to norm 1
    out = aggregate(strategy, [[3.0, 0.0], [0.0, 4.0]], [1000, 10])
    assert out == pytest.approx([0.5, 0.5], abs=1e-6)


def test_noise_scale_follows_the_noise_multiplier(aggregate):
    outs = []
    for _ in range(200):
        strategy = build_strategy(_config(client_dp="fixed", client_noise_multiplier=2.0, client_clipping_norm=1.0), num_shops=2)
        outs.append(aggregate(strategy, [[0.2, 0.0], [0.0, 0.2]], [5, 5]) - 0.1)
    # std = sigma * C / m = 2 * 1 / 2, around the clean mean (0.1, 0.1)
    assert np.std(np.concatenate(outs)) == pytest.approx(1.0, rel=0.15)
    assert abs(np.mean(np.concatenate(outs))) < 0.15


def test_server_ledger_accounts_each_round(tmp_path):
    cfg = _config(client_dp="fixed", client_noise_multiplier=1.2, client_clipping_norm=0.5, client_delta=1e-4)
    ledger = ServerPrivacyLedger(tmp_path, cfg, num_shops=4)
    for r in (1, 2, 3):
        entry = ledger.record_round(r, f"v{r}", 4, 0.5)
    assert entry["epsilon"] == pytest.approx(epsilon([(1.2, 1.0, 3)], 1e-4, "rdp"))
    assert ledger.ledger.verify()[0]["planned_epsilon"] == pytest.approx(epsilon([(1.2, 1.0, cfg.train.rounds)], 1e-4, "rdp"))
    with pytest.raises(ValueError, match="changed"):
        ServerPrivacyLedger(tmp_path, _config(client_dp="fixed", client_noise_multiplier=0.5, client_delta=1e-4), num_shops=4)


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_missing_shops_count_as_zero_so_the_sensitivity_is_c_over_m(mode, aggregate):
    """Issue 12.9: Flower's wrappers average the replies (denominator r), while the noise σC/m and
    the ledger assume the fixed denominator m; with r < m one shop moved the mean by up to 2C/r.
    The sum of the clipped updates is divided by the m sampled shops, a missing one counting as zero."""
    strategy = build_strategy(_config(client_dp=mode, client_noise_multiplier=0.0, client_clipping_norm=10.0), num_shops=3)
    out = aggregate(strategy, [[3.0, 0.0], [0.0, 6.0]], [5, 5])  # 2 of the 3 sampled shops replied
    assert out == pytest.approx([1.0, 2.0], abs=1e-6)
    full = build_strategy(_config(client_dp=mode, client_noise_multiplier=0.0, client_clipping_norm=10.0), num_shops=2)
    assert aggregate(full, [[3.0, 0.0], [0.0, 6.0]], [5, 5]) == pytest.approx([1.5, 3.0], abs=1e-6)


def test_adaptive_clipping_accounts_the_clipped_count_at_its_true_sensitivity(tmp_path):
    """Issue 12.9: Flower's adaptive clipping splits σ between the update and a noisy count of the
    clipped updates as if the count had sensitivity 1/2 (centred bits, Andrew et al.), but it noises
    the plain count of 0/1 bits, sensitivity 1. The two releases compose as one Gaussian of
    multiplier (z_update⁻² + σ_count⁻²)^-½, which is what the ledger must account."""
    from flwr.serverapp.strategy.dp_adaptive_clipping import compute_adaptive_noise_params

    cfg = _config(client_dp="adaptive", client_noise_multiplier=0.8, client_clipping_norm=0.5, client_delta=1e-4)
    ledger = ServerPrivacyLedger(tmp_path, cfg, num_shops=10)
    count_std, update_z = compute_adaptive_noise_params(0.8, 10, None)
    true_z = (update_z**-2 + count_std**-2) ** -0.5
    assert true_z < 0.8  # Flower's claim: 0.8
    plan = ledger.ledger.verify()[0]
    assert plan["effective_noise_multiplier"] == pytest.approx(true_z)
    assert plan["planned_epsilon"] == pytest.approx(epsilon([(true_z, 1.0, cfg.train.rounds)], 1e-4, "rdp"))
    assert plan["planned_epsilon"] > epsilon([(0.8, 1.0, cfg.train.rounds)], 1e-4, "rdp")
    assert ledger.record_round(1, "v1", 10, 0.5)["epsilon"] == pytest.approx(epsilon([(true_z, 1.0, 1)], 1e-4, "rdp"))


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_server_side_dp_noise_does_not_come_from_numpys_global_generator(mode, aggregate):
    """The server's client-level DP noise (and adaptive clipping's noisy count) came from
    ``np.random.normal``: Mersenne Twister, predictable from its state. It must come from the CSPRNG."""
    outs = []
    for _ in range(2):
        np.random.seed(0)
        strategy = build_strategy(_config(client_dp=mode, client_noise_multiplier=0.15, client_clipping_norm=1.0), num_shops=2)
        outs.append(aggregate(strategy, [[0.2, 0.0], [0.0, 0.2]], [5, 5]))
        if mode == "adaptive":
            outs[-1] = np.append(outs[-1], strategy.clipping_norm)
    assert not np.allclose(outs[0], outs[1])

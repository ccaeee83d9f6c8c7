"""Two runs with the same seed give bit-for-bit the same global model (issue 13.10b: they differed
by about 6e-8 from round 1 on)."""

from __future__ import annotations

import numpy as np

from fedgraph.config import RunConfig
from fedgraph.federation.rounds import aggregate_in_shop_order
from fedgraph.federation.server_strategy import build_strategy


def test_the_aggregate_does_not_depend_on_the_order_the_replies_arrive_in(train_reply):
    rng = np.random.default_rng(3)
    updates = [rng.normal(size=4096).astype(np.float32) for _ in range(6)]
    users = [17, 230, 5, 64, 1031, 9]
    replies = [train_reply(u, {"num-examples": n, "partition-id": p}, 100 + 7 * p) for p, (u, n) in enumerate(zip(updates, users))]
    arrival_orders = [replies, replies[::-1], [replies[i] for i in (3, 0, 5, 1, 4, 2)]]

    def plain(order):
        strategy = build_strategy(RunConfig(), num_shops=6)
        return strategy.aggregate_train(1, order)[0].to_numpy_ndarrays()[0]

    # Flower sums in arrival order, and float addition is not associative: this is the 6e-8.
    assert any(not np.array_equal(plain(arrival_orders[0]), plain(o)) for o in arrival_orders[1:])

    def ours(order):
        strategy = build_strategy(RunConfig(), num_shops=6)
        return aggregate_in_shop_order(strategy, 1, order)[0].to_numpy_ndarrays()[0]

    first = ours(arrival_orders[0])
    assert all(np.array_equal(first, ours(o)) for o in arrival_orders[1:])
    np.testing.assert_allclose(first, plain(arrival_orders[0]), rtol=1e-6)  # the same weighted mean

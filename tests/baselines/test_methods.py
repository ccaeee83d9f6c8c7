"""The pooled reference sees each customer's own search queries, as the federated model does (issue 14.4)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedgraph.baselines.methods import pool_shops


def test_pooled_shops_keep_each_customers_search_queries(planted_shop):
    a, b = planted_shop(seed=0), planted_shop(seed=1)
    counts = np.zeros(b.num_users, dtype=np.int64)
    counts[[3, 7]] = [2, 1]
    b = replace(b, query_indptr=np.concatenate([[0], np.cumsum(counts)]), query_text=np.eye(3, 4, dtype=np.float32))
    a = replace(a, query_text=np.zeros((0, 4), dtype=np.float32))
    pooled, _ = pool_shops([a, b])
    assert len(pooled.query_text) == 3
    np.testing.assert_array_equal(pooled.queries(a.num_users + 3), b.queries(3))
    np.testing.assert_array_equal(pooled.queries(a.num_users + 7), b.queries(7))
    assert len(pooled.queries(0)) == 0

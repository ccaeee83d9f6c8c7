"""Hand-computed checks for fedgraph.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedgraph.metrics import (
    aggregate_shops,
    evaluate_ranking,
    ndcg_at_k,
    recall_at_k,
    top_k_items,
)

L2 = math.log2


def test_recall_and_ndcg_hand_computed():
    # ranked [3, 1, 2], relevant {1, 2}, k=2: top-2 = [3, 1] -> one hit (item 1 at rank 2).
    # recall = 1 / |{1, 2}| = 0.5
    # DCG  = 1/log2(2+1)                       (hit at rank 2)
    # IDCG = 1/log2(1+1) + 1/log2(2+1) = 1 + 1/log2(3)   (min(|R|, k) = 2 ideal hits)
    ranked = np.array([[3, 1, 2]])
    relevant = [{1, 2}]
    assert recall_at_k(ranked, relevant, 2)[0] == pytest.approx(0.5)
    expected = (1 / L2(3)) / (1 + 1 / L2(3))
    assert ndcg_at_k(ranked, relevant, 2)[0] == pytest.approx(expected)
    # k=3 sees both: recall 1; DCG = 1/log2(3) + 1/log2(4) = 1/log2(3) + 0.5, IDCG = 1 + 1/log2(3)
    assert recall_at_k(ranked, relevant, 3)[0] == pytest.approx(1.0)
    assert ndcg_at_k(ranked, relevant, 3)[0] == pytest.approx((1 / L2(3) + 0.5) / (1 + 1 / L2(3)))


def test_recall_divides_by_all_relevant_items_lightgcn_style():
    # 5 relevant items, k=2, both top items relevant: recall = 2/5 (not 2/min(5, 2) = 1),
    # while NDCG is 1 because IDCG only counts min(5, 2) = 2 ideal hits.
    ranked = np.array([[0, 1, 9]])
    relevant = [[0, 1, 2, 3, 4]]
    assert recall_at_k(ranked, relevant, 2)[0] == pytest.approx(0.4)
    assert ndcg_at_k(ranked, relevant, 2)[0] == pytest.approx(1.0)


def test_perfect_and_zero():
    ranked = np.array([[5, 6, 7], [1, 2, 3]])
    relevant = [np.array([5]), np.array([9])]
    np.testing.assert_allclose(recall_at_k(ranked, relevant, 3), [1.0, 0.0])
    np.testing.assert_allclose(ndcg_at_k(ranked, relevant, 3), [1.0, 0.0])


def test_empty_relevant_gives_nan_and_is_skipped():
    ranked = np.array([[0, 1], [0, 1], [1, 0]])
    relevant = [set(), [1], None]
    r = recall_at_k(ranked, relevant, 2)
    n = ndcg_at_k(ranked, relevant, 2)
    assert math.isnan(r[0]) and math.isnan(r[2]) and math.isnan(n[0])
    # user 1: item 1 at rank 2 -> recall 1, ndcg = (1/log2 3) / 1
    assert r[1] == pytest.approx(1.0)
    assert n[1] == pytest.approx(1 / L2(3))
    res = evaluate_ranking(ranked, relevant, k=2)
    assert res["users"] == 1
    assert res["recall@2"] == pytest.approx(1.0)
    assert res["ndcg@2"] == pytest.approx(1 / L2(3))


def test_evaluate_ranking_means_and_keys():
    # u0: ranked [0, 1, 2], R={0}: recall 1, ndcg 1
    # u1: ranked [2, 0, 1], R={1, 2}, k=2: hit at rank 1 -> recall 1/2, ndcg 1/(1 + 1/log2 3)
    ranked = np.array([[0, 1, 2], [2, 0, 1]])
    relevant = [{0}, {1, 2}]
    res = evaluate_ranking(ranked, relevant, k=2)
    assert set(res) == {"recall@2", "ndcg@2", "users"}
    assert res["users"] == 2
    assert res["recall@2"] == pytest.approx((1 + 0.5) / 2)
    assert res["ndcg@2"] == pytest.approx((1 + 1 / (1 + 1 / L2(3))) / 2)
    assert isinstance(res["recall@2"], float)
    default = evaluate_ranking(np.zeros((1, 20), dtype=np.int64), [{0}])
    assert set(default) == {"recall@20", "ndcg@20", "users"}
    assert default["recall@20"] == pytest.approx(1.0)  # repeated item counts once


def test_no_evaluable_users():
    res = evaluate_ranking(np.array([[0, 1]]), [[]], k=2)
    assert res["users"] == 0 and math.isnan(res["recall@2"]) and math.isnan(res["ndcg@2"])


def test_padding_minus_one_is_ignored():
    # Only 2 real items; -1 padding never hits, even if -1 sneaks into a relevant set.
    ranked = np.array([[1, -1, -1]])
    relevant = [{0, 1, -1}]
    # R = {0, 1} (negative ids dropped): hit at rank 1 -> recall 1/2, ndcg 1/(1 + 1/log2 3)
    assert recall_at_k(ranked, relevant, 3)[0] == pytest.approx(0.5)
    assert ndcg_at_k(ranked, relevant, 3)[0] == pytest.approx(1 / (1 + 1 / L2(3)))


def test_input_validation():
    with pytest.raises(ValueError):
        recall_at_k(np.array([[0, 1]]), [{0}], 3)  # fewer columns than k
    with pytest.raises(ValueError):
        recall_at_k(np.array([[0, 1]]), [{0}, {1}], 1)  # user count mismatch
    with pytest.raises(ValueError):
        ndcg_at_k(np.array([[0, 1]]), [{0}], 0)
    with pytest.raises(TypeError):
        recall_at_k(np.array([[0.0, 1.0]]), [{0}], 1)


def test_top_k_basic_order():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(top_k_items(scores, 3, None), [[1, 2, 3], [0, 1, 2]])
    assert top_k_items(scores, 2).dtype == np.int64


def test_top_k_exclusion():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    exclude = [np.array([1, 2]), np.array([], dtype=np.int64)]
    np.testing.assert_array_equal(top_k_items(scores, 2, exclude), [[3, 0], [0, 1]])
    # sets / lists / None work too, and the input tensor is not modified
    before = scores.clone()
    np.testing.assert_array_equal(top_k_items(scores, 1, [{1}, None]), [[2], [0]])
    assert torch.equal(scores, before)


def test_top_k_exclusion_leaves_too_few_items_pads():
    scores = torch.tensor([[0.1, 0.9, 0.5]])
    np.testing.assert_array_equal(top_k_items(scores, 3, [np.array([0, 1])]), [[2, -1, -1]])


def test_top_k_fewer_items_than_k_pads():
    scores = torch.tensor([[0.2, 0.7], [0.5, 0.1]])
    ranked = top_k_items(scores, 5)
    np.testing.assert_array_equal(ranked, [[1, 0, -1, -1, -1], [0, 1, -1, -1, -1]])
    # metrics ignore the padding: u0 R={0}: hit at rank 2; u1 R={3} (unreachable): 0
    np.testing.assert_allclose(recall_at_k(ranked, [{0}, {3}], 5), [1.0, 0.0])
    np.testing.assert_allclose(ndcg_at_k(ranked, [{0}, {3}], 5), [1 / L2(3), 0.0])


def test_top_k_ties_break_to_lower_index():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    np.testing.assert_array_equal(top_k_items(scores, 2), [[1, 2], [0, 1]])
    np.testing.assert_array_equal(top_k_items(scores, 4), [[1, 2, 3, 0], [0, 1, 2, 3]])
    # integer scores (e.g. popularity counts) with ties
    pop = torch.tensor([[3, 7, 7, 1, 7]])
    np.testing.assert_array_equal(top_k_items(pop, 3, [np.array([2])]), [[1, 4, 0]])


def test_top_k_ties_deterministic_at_scale():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (300, 500), generator=g).float()
    exclude = [torch.randperm(500, generator=g)[: u % 40].numpy() for u in range(300)]
    ranked = top_k_items(scores, 20, exclude, chunk_size=64)
    # reference: mask, then a stable descending sort (ties -> lower index first)
    masked = scores.clone()
    for u, items in enumerate(exclude):
        masked[u, torch.from_numpy(items)] = -math.inf
    ref = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :20].numpy()
    np.testing.assert_array_equal(ranked, ref)
    np.testing.assert_array_equal(top_k_items(scores, 20, None), top_k_items(scores, 20, None, chunk_size=7))


def test_top_k_rejects_nan_and_bad_exclude():
    with pytest.raises(ValueError, match="NaN"):
        top_k_items(torch.tensor([[0.1, float("nan")]]), 1)
    with pytest.raises(IndexError):
        top_k_items(torch.tensor([[0.1, 0.2]]), 1, [np.array([2])])
    with pytest.raises(ValueError):
        top_k_items(torch.tensor([[0.1, 0.2]]), 1, [np.array([0]), np.array([1])])


def test_aggregate_macro_vs_weighted():
    per_shop = {
        "a": {"recall@20": 0.2, "ndcg@20": 0.1, "users": 10},
        "b": {"recall@20": 0.6, "ndcg@20": 0.3, "users": 30},
    }
    weights = {"a": 10, "b": 30}
    agg = aggregate_shops(per_shop, weights)
    # macro: (0.2 + 0.6) / 2 = 0.4 ; weighted: (10*0.2 + 30*0.6) / 40 = 20 / 40 = 0.5
    assert agg["macro"]["recall@20"] == pytest.approx(0.4)
    assert agg["weighted"]["recall@20"] == pytest.approx(0.5)
    # ndcg macro (0.1+0.3)/2 = 0.2 ; weighted (1 + 9) / 40 = 0.25
    assert agg["macro"]["ndcg@20"] == pytest.approx(0.2)
    assert agg["weighted"]["ndcg@20"] == pytest.approx(0.25)
    assert agg["shops"] == 2 and agg["users"] == 40
    assert "users" not in agg["macro"]
    # weights default to each shop's "users"
    assert aggregate_shops(per_shop) == agg


def test_aggregate_skips_shops_without_users():
    per_shop = {
        "a": {"recall@20": 0.2, "users": 5},
        "empty": {"recall@20": math.nan, "users": 0},
    }
    agg = aggregate_shops(per_shop, {"a": 5, "empty": 0})
    assert agg["macro"]["recall@20"] == pytest.approx(0.2)
    assert agg["weighted"]["recall@20"] == pytest.approx(0.2)
    assert agg["shops"] == 2 and agg["shops_evaluated"] == 1
    # a figure read back from a report file: JSON stores "no figure" as null
    assert aggregate_shops({**per_shop, "empty": {"recall@20": None, "users": 0}}) == agg
    with pytest.raises(KeyError):
        aggregate_shops(per_shop, {"a": 5})
    assert aggregate_shops({}, {}) == {"macro": {}, "weighted": {}, "shops": 0, "users": 0, "shops_evaluated": 0}


def test_reports_are_valid_json_without_bare_nan(tmp_path):
    """Issue 13.10b: metrics.json held bare NaN (JSON.parse fails) for shops with no evaluable users."""
    import json
    import math

    from fedgraph.atomic import atomic_write_json

    path = atomic_write_json(tmp_path / "m.json", {"ndcg@20": math.nan, "per_shop": {"a": {"recall@20": float("inf")}}, "ok": 1.5})
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"bare {c}")))
    assert json.loads(text) == {"ndcg@20": None, "per_shop": {"a": {"recall@20": None}}, "ok": 1.5}

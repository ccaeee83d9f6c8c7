"""EASE, item-kNN, the DP Gram release, the hybrid blend and model selection on validation."""

import numpy as np
import pytest
import torch

from fedgraph.baselines.methods import early_stopped, tuned_shop_model
from fedgraph.models.ease import EASE, dp_ease_noise, dp_gram, interaction_matrix
from fedgraph.models.hybrid import blend, choose_alpha, standardise
from fedgraph.models.itemknn import ItemKNN
from fedgraph.selection import select_round


def _csr(rows, n_items):
    indptr = np.cumsum([0] + [len(r) for r in rows])
    return interaction_matrix(indptr, np.array([i for r in rows for i in r], dtype=np.int64), n_items)


def test_ease_matches_the_hand_computed_closed_form():
    # X^T X + I = 2I + J (J all ones), whose inverse is (I - J/5)/2: P_jj = 0.4, P_ij = -0.1,
    # so B_ij = -P_ij / P_jj = 0.25 off the diagonal and 0 on it.
    x = _csr([[0, 1], [1, 2], [0, 2]], 3)
    model = EASE(l2=1.0).fit(x)
    assert torch.allclose(model.weights, torch.tensor([[0, 0.25, 0.25], [0.25, 0, 0.25], [0.25, 0.25, 0]]), atol=1e-6)
    assert torch.allclose(model.scores(x[[0]]), torch.tensor([[0.25, 0.25, 0.5]]), atol=1e-6)


def test_ease_leaves_untouched_items_out_and_caps_the_active_set():
    x = _csr([[0, 1], [1], [1, 3]], 5)  # items 2 and 4: nobody
    model = EASE(l2=1.0).fit(x)
    assert model.active.tolist() == [0, 1, 3]
    assert model.scores(x).shape == (3, 5) and torch.all(model.scores(x)[:, [2, 4]] == 0)
    capped = EASE(l2=1.0, max_items=1).fit(x)
    assert capped.active.tolist() == [1]  # the most popular item
    with pytest.raises(ValueError, match="l2 must be > 0"):
        EASE(l2=0)


def test_itemknn_matches_the_hand_computed_cosines():
    # columns: item 0 by users {0,1,3}, item 1 by {0,1,2}, item 2 by {2}:
    # cos(0,1) = 2/3, cos(1,2) = 1/sqrt(3), cos(0,2) = 0; one neighbour per item.
    x = _csr([[0, 1], [0, 1], [1, 2], [0]], 3)
    model = ItemKNN(neighbours=1).fit(x)
    expected = np.array([[0, 2 / 3, 0], [2 / 3, 0, 0], [0, 1 / np.sqrt(3), 0]])
    assert np.allclose(model.similarity.toarray(), expected, atol=1e-6)
    assert np.allclose(model.scores(x[[2]]).numpy(), [[2 / 3, 1 / np.sqrt(3), 0]], atol=1e-6)
    full = ItemKNN(neighbours=5).fit(x)  # more neighbours than items: every similarity kept
    assert np.allclose(full.similarity.toarray()[1], [2 / 3, 0, 1 / np.sqrt(3)], atol=1e-6)


def test_interaction_matrix_keeps_each_users_latest_items():
    indptr, item = np.array([0, 3, 4]), np.array([5, 1, 2, 0])  # user 0: 5, then 1, then 2 (oldest first)
    clipped = interaction_matrix(indptr, item, 6, latest=2)
    assert clipped[0].indices.tolist() == [1, 2] and clipped[1].indices.tolist() == [0]
    assert interaction_matrix(indptr, item, 6)[0].indices.tolist() == [1, 2, 5]


def test_dp_gram_is_symmetric_with_noise_of_the_stated_scale():
    x = _csr([[0, 1], [1, 2], [0, 2]] * 10, 40)
    exact = dp_gram(x, max_items_per_user=2, noise_multiplier=0.0, rng=np.random.default_rng(0))
    assert np.array_equal(exact, (x.T @ x).toarray())
    noisy = dp_gram(x, max_items_per_user=2, noise_multiplier=1.5, rng=np.random.default_rng(0))
    assert np.array_equal(noisy, noisy.T)
    assert np.std(np.triu(noisy - exact)[np.triu_indices(40)]) == pytest.approx(1.5 * 2, rel=0.1)  # sigma * m
    with pytest.raises(ValueError, match="clip rows first"):
        dp_gram(x, max_items_per_user=1, noise_multiplier=1.0, rng=np.random.default_rng(0))


def test_dp_ease_noise_is_opacus_rdp_for_one_release():
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    sigma = dp_ease_noise(8.0, 1e-5)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    eps, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=1.0, noise_multiplier=sigma, steps=1, orders=orders), delta=1e-5)
    assert eps <= 8.0 and eps > 7.5
    assert dp_ease_noise(1.0, 1e-5) > sigma


def test_blend_standardises_rows_and_alpha_picks_the_share():
    g = torch.tensor([[1.0, 2.0, 3.0]])
    p = torch.tensor([[30.0, 20.0, 10.0]])
    assert torch.allclose(standardise(g), torch.tensor([[-1.0, 0.0, 1.0]]))
    assert torch.allclose(blend(g, p, 1.0), standardise(g)) and torch.allclose(blend(g, p, 0.0), standardise(p))
    assert torch.allclose(blend(g, p, 0.5), torch.zeros(1, 3))
    assert torch.all(standardise(torch.ones(2, 4)) == 0)  # no spread: no preference
    best, tried = choose_alpha(g, p, evaluate=lambda s: float(s[0, 0]), alphas=(0.0, 0.5, 1.0))
    assert best == 0.0 and tried == {0.0: 1.0, 0.5: 0.0, 1.0: -1.0}
    with pytest.raises(ValueError, match="alpha"):
        blend(g, p, 1.5)


def _history(values):
    return {"rounds": [{"round": r, "eval": {"a": {"ndcg@20": v[0]}, "b": {"ndcg@20": v[1]}}} for r, v in enumerate(values)]}


def test_the_kept_round_is_the_validation_best_one():
    best, per_round = select_round(_history([(0.1, 0.1), (0.3, 0.2), (0.2, 0.2), (0.4, 0.1)]), 20)
    assert best == 1 and per_round[1] == pytest.approx(0.25)  # macro over shops, not one shop's best
    assert select_round(_history([(0.2, 0.2), (0.2, 0.2)]), 20)[0] == 0  # ties: the earlier round
    with pytest.raises(RuntimeError, match="resume the run"):
        select_round({"rounds": []}, 20)


class _Const:
    """A shop model whose scores favour item ``setting``."""

    def __init__(self, setting):
        self.setting = setting

    def fit(self, matrix):
        self.n = matrix.shape[1]
        return self

    def scores(self, matrix):
        out = torch.zeros(matrix.shape[0], self.n)
        out[:, self.setting] = 1.0
        return out


def _view(train_rows, held_out_rows, n_items):
    from fedgraph.shop import ShopData

    indptr = np.cumsum([0] + [len(r) for r in train_rows])
    t_indptr = np.cumsum([0] + [len(r) for r in held_out_rows])
    n_users = len(train_rows)
    return ShopData(
        shop="s",
        items=np.array([f"i{i}" for i in range(n_items)]),
        item_titles=np.array([""] * n_items),
        item_categories=np.array([""] * n_items),
        item_features=np.zeros((n_items, 2), np.float32),
        users=np.array([f"u{u}" for u in range(n_users)]),
        indptr=indptr,
        item=np.array([i for r in train_rows for i in r], dtype=np.int64),
        attr=np.zeros((indptr[-1], 5), np.float32),
        test_indptr=t_indptr,
        test_item=np.array([i for r in held_out_rows for i in r], dtype=np.int64),
    )


def test_settings_are_chosen_on_validation_and_scored_on_test():
    val = _view([[0], [0]], [[2], [2]], 4)  # validation: item 2 is the answer
    final = _view([[0], [0]], [[3], [3]], 4)  # test: item 3 would be
    result = tuned_shop_model(_Const, (1, 2, 3), val, final, k=1)
    assert result["setting"] == 2 and result["validation_ndcg"] == 1.0
    assert result["ndcg@1"] == 0.0  # the test split never took part in the choice


def test_early_stopping_keeps_the_validation_best_chunk(monkeypatch):
    import fedgraph.baselines.methods as b

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)

    def fake_train(m, data, settings, **_):  # every chunk adds 1 to the weight
        with torch.no_grad():
            m.weight += 1.0

    monkeypatch.setattr(b, "train_local", fake_train)
    scores = {0: 0.1, 1: 0.3, 2: 0.5, 3: 0.4, 4: 0.2, 5: 0.45, 6: 0.1}
    chosen = early_stopped(
        model,
        None,
        b.TrainSettings(),
        chunk_epochs=2,
        max_chunks=10,
        patience=3,
        device=torch.device("cpu"),
        validate=lambda m: scores[int(m.weight.item())],
    )
    assert chosen["chunks"] == 2 and chosen["validation_ndcg"] == 0.5
    assert chosen["curve"] == [0.1, 0.3, 0.5, 0.4, 0.2, 0.45]  # stopped after 3 chunks without a better score
    assert model.weight.item() == 2.0  # the best state is left in the model


def _shop(name, items, titles, rows):
    view = _view(rows, [[] for _ in rows], len(items))
    view.shop, view.items, view.item_titles = name, np.array(items), np.array(titles)
    return view


def test_summed_counts_are_the_pooled_gram_matrix_over_shared_items(tmp_path):
    from fedgraph.federation.item_counts import CountSum, item_keys, save_counts, shop_gram, upper_counts

    # "b"/"B" is the same item in both shops (same id, same title); "c" is not (titles differ).
    a = _shop("a", ["a", "b", "c"], ["A", "B", "C1"], [[0, 1], [1, 2], [0, 1, 2]])
    b = _shop("b", ["b", "c", "d"], ["B", "C2", "D"], [[0, 2], [0, 1]])
    total = CountSum()
    for shop in (a, b):
        total.add(item_keys(shop), *upper_counts(shop))
    vocab, summed = total.total()
    assert len(vocab) == 5  # a, b, c (C1), c (C2), d
    path = save_counts(tmp_path / "counts.npz", {"train": (vocab, summed)}, shops=2)
    got = shop_gram(path, "train", a)
    own = (interaction_matrix(a.indptr, a.item, 3).T @ interaction_matrix(a.indptr, a.item, 3)).toarray()
    expected = own.copy()
    expected[1, 1] += 2  # shop b's customers with item "b"
    assert np.array_equal(got, expected)
    assert np.array_equal(shop_gram(path, "train", b)[2], [1, 0, 1])  # d: with b once, never with b's "c"
    unknown = _shop("x", ["z"], ["Z"], [[0]])
    assert np.array_equal(shop_gram(path, "train", unknown), [[0.0]])
    with pytest.raises(FileNotFoundError, match="federated item counts"):
        shop_gram(tmp_path / "missing.npz", "train", a)


@pytest.mark.parametrize("overrides", [["privacy.enabled=true"], ["privacy.secure_aggregation=true"], ["model.shop_private=ease"]])
def test_a_shop_refuses_to_send_counts_unless_its_own_config_allows_it(tmp_path, overrides):
    from fedgraph.config import RunConfig
    from fedgraph.federation.shop_side import CountsRefused, shop_item_counts

    RunConfig.load(None, overrides).save(tmp_path / "config.toml")
    with pytest.raises(CountsRefused, match="not differentially private"):
        shop_item_counts(str(tmp_path), 0)


def test_federated_ease_with_dp_is_refused_with_the_way_out():
    from fedgraph.config import ConfigError, RunConfig

    assert (
        RunConfig.load(None, ["privacy.enabled=true"]).model.private_part(RunConfig.load(None, ["privacy.enabled=true"]).privacy) == "ease"
    )
    assert RunConfig().model.private_part(RunConfig().privacy) == "federated_ease"
    with pytest.raises(ConfigError, match="use model.shop_private=ease or none"):
        RunConfig.load(None, ["privacy.enabled=true", "model.shop_private=federated_ease"])


def test_federated_ease_equals_ease_on_all_shops_data_pooled(tmp_path):
    """EASE on the summed counts, scored for one shop, is EASE fitted on the stacked rows of
    every shop over the shared item space: pooling without moving a customer's row."""
    from fedgraph.federation.item_counts import CountSum, FederatedEASE, item_keys, upper_counts

    a = _shop("a", ["a", "b", "c"], ["A", "B", "C"], [[0, 1], [1, 2], [0, 1, 2], [0]])
    b = _shop("b", ["b", "c", "d"], ["B", "C", "D"], [[0, 2], [0, 1], [1, 2], [0, 1, 2]])
    total = CountSum()
    for shop in (a, b):
        total.add(item_keys(shop), *upper_counts(shop))
    vocab, summed = total.total()
    fed = FederatedEASE(vocab, summed, 5.0)
    # pooled by hand: items a, b, c, d as columns 0..3
    pooled = _csr([[0, 1], [1, 2], [0, 1, 2], [0], [1, 3], [1, 2], [2, 3], [1, 2, 3]], 4)
    direct = EASE(5.0).fit(pooled).scores(pooled)
    rows_a = interaction_matrix(a.indptr, a.item, 3)
    assert torch.allclose(fed.scores(a, rows_a), direct[:4, [0, 1, 2]], atol=1e-5)
    rows_b = interaction_matrix(b.indptr, b.item, 3)
    assert torch.allclose(fed.scores(b, rows_b), direct[4:, [1, 2, 3]], atol=1e-5)

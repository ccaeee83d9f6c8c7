import torch

from fedgraph.models import InterestModel, UserBatch


def _batch(b=4, h=6, p=2, n=5, items=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, generator=g) > 0.3
    mask[:, 0] = True
    return UserBatch(
        torch.randint(0, items, (b, h), generator=g),
        torch.rand(b, h, 5, generator=g),
        mask,
        torch.randint(0, items, (b, p), generator=g),
        torch.ones(b, p, dtype=torch.bool),
        torch.randint(0, items, (b, n), generator=g),
        torch.ones(b, n, dtype=torch.bool),
    )


def _model(local=0, seed=0):
    torch.manual_seed(seed)
    return InterestModel(10, dim=8, hidden=16, num_local_items=local)


def test_shapes_and_unit_norms():
    model, batch, feats = _model(local=20), _batch(), torch.randn(20, 10)
    user, pos, neg = model(batch, feats)
    assert user.shape == (4, 8) and pos.shape == (4, 2) and neg.shape == (4, 5)
    assert torch.allclose(user.norm(dim=1), torch.ones(4), atol=1e-5)
    items = model.item_embeddings(feats, torch.arange(20))
    assert items.shape == (20, 9)
    assert torch.allclose(items[:, :8].norm(dim=1), torch.ones(20), atol=1e-5)
    assert model.recommendation_loss(batch, feats).shape == (4,)


def test_same_seed_same_model_and_loss():
    batch, feats = _batch(), torch.randn(20, 10)
    a, b, c = _model(seed=1), _model(seed=1), _model(seed=2)
    assert torch.equal(a.recommendation_loss(batch, feats), b.recommendation_loss(batch, feats))
    assert not torch.equal(a.recommendation_loss(batch, feats), c.recommendation_loss(batch, feats))


def test_shared_state_has_no_shop_specific_tensor():
    model = _model(local=20)
    shared, local = model.shared_state_dict(), model.local_state_dict()
    assert set(local) == {"local.weight"}
    assert not any(k.startswith("local.") for k in shared)
    # The shared part has the same shapes whatever the catalog size: it is transferable.
    other = _model(local=999).shared_state_dict()
    assert {k: v.shape for k, v in shared.items()} == {k: v.shape for k, v in other.items()}


def test_a_users_loss_depends_only_on_their_own_row():
    """Changing user 0's row leaves every other user's loss and gradient unchanged."""
    model, feats = _model(local=20), torch.randn(20, 10)
    batch = _batch()
    changed = _batch()
    changed.history[0] = (changed.history[0] + 7) % 20
    changed.positives[0] = (changed.positives[0] + 3) % 20
    la, lb = model.recommendation_loss(batch, feats), model.recommendation_loss(changed, feats)
    assert not torch.isclose(la[0], lb[0])
    assert torch.allclose(la[1:], lb[1:])
    grads = []
    for rows in (batch, changed):
        model.zero_grad()
        model.recommendation_loss(rows, feats)[1].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1])


def test_loss_matches_hand_computation():
    model, feats = _model(), torch.randn(20, 10)
    batch = _batch(b=1, p=1, n=3)
    batch.negative_mask[0, 1] = False  # a masked negative is ignored
    _, pos, neg = model(batch, feats)
    expected = -pos[0, 0] + torch.logsumexp(torch.stack([pos[0, 0], neg[0, 0], neg[0, 2]]), 0)
    assert torch.isclose(model.recommendation_loss(batch, feats)[0], expected, atol=1e-5)


def test_recommend_excludes_seen_items():
    model = _model()
    items = model.item_embeddings(torch.randn(6, 10))
    users = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
    exclude = torch.zeros(2, 6, dtype=torch.bool)
    top = model.recommend(users, items, k=1)
    exclude[0, top[0, 0]] = True
    again = model.recommend(users, items, k=1, exclude=exclude)
    assert again[0, 0] != top[0, 0] and again[1, 0] == top[1, 0]


def test_content_term_adds_the_scaled_text_cosine_in_training_and_serving():
    """With ``content_dim`` the score is z_u.e_i/tau + s cos(c_u, t_i)/tau + b_i, where c_u is the
    normalised sum of the user's history text vectors: forward (training) and the serving
    embeddings give the same scores, and s = 0 gives back the model without the term."""
    torch.manual_seed(0)
    model, batch, feats = InterestModel(10, dim=8, hidden=16, content_dim=4), _batch(), torch.randn(20, 10)
    user, pos, neg = model(batch, feats)
    assert user.shape == (4, 8 + 4) and model.user_embedding_size == 12 and model.item_embedding_size == 13
    items = model.item_embeddings(feats)
    text = torch.nn.functional.normalize(feats[:, :4], dim=1)
    assert torch.allclose(items[:, 8:12], text)
    profile = torch.nn.functional.normalize((text[batch.history] * batch.history_mask.unsqueeze(-1)).sum(1), dim=1)
    cos = (profile.unsqueeze(1) * text[batch.positives]).sum(-1)
    base = torch.einsum("bd,btd->bt", user[:, :8], items[batch.positives][..., :8]) / model.temperature
    assert torch.allclose(pos, base + cos / model.temperature, atol=1e-5)  # s starts at 1
    served = model.score(model.user_embeddings_from(items[batch.history], batch.history_attr, batch.history_mask), items)
    assert torch.allclose(served.gather(1, batch.negatives), neg, atol=1e-5)
    with torch.no_grad():
        model.content_scale.weight.zero_()
    _, pos0, _ = model(batch, feats)
    assert torch.allclose(pos0, base, atol=1e-5)


def test_the_model_is_built_from_its_config_not_by_the_run_directory():
    """Issue 17.4: RunDir built models; the model's own from_config does, RunDir only supplies
    the feature width it prepared."""
    import torch

    from fedgraph.config import ModelConfig
    from fedgraph.models import InterestModel

    config = ModelConfig(dim=8, hidden=16, local_items=True, content_score=True)
    a = InterestModel.from_config(config, in_features=20, text_dim=12, num_local_items=5, seed=3)
    b = InterestModel.from_config(config, in_features=20, text_dim=12, num_local_items=5, seed=3)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert (a.dim, a.hidden, a.content_dim, a.num_local_items) == (8, 16, 12, 5)
    plain = InterestModel.from_config(ModelConfig(local_items=False, content_score=False), in_features=20, text_dim=12, num_local_items=5)
    assert (plain.content_dim, plain.local) == (0, None)

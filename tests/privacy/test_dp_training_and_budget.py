"""User-level DP-SGD, accounting and the privacy ledger."""

import json
import math

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.grad_sample import GradSampleModule

from fedgraph.config import PrivacyConfig
from fedgraph.models import InterestModel
from fedgraph.privacy import DPSettings, LedgerTamperedError, PrivacyLedger, default_delta, epsilon, noise_multiplier_for, spent
from fedgraph.privacy.accounting import BudgetError
from fedgraph.privacy.budget import open_budget
from fedgraph.shop import build_shop_data
from fedgraph.training import RowSampler, TrainSettings, train_local

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---------------------------------------------------------------------- accounting
def test_accountants_match_opacus_and_prv_is_tighter():
    history = [(1.0, 0.01, 1000)]
    rdp, prv = epsilon(history, 1e-5, "rdp"), epsilon(history, 1e-5, "prv")
    acc = RDPAccountant()
    acc.history = list(history)
    assert rdp == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-12)
    acc = PRVAccountant()
    acc.history = list(history)
    assert prv == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-9)
    assert rdp == pytest.approx(2.10, abs=0.01) and prv == pytest.approx(1.84, abs=0.01)
    both = spent(history, 1e-5, "prv")
    assert both.reported == both.by_accountant["prv"] == prv and both.reported_by == "prv" and both.rdp == rdp
    assert spent(history, 1e-5, "rdp").reported == rdp


def test_prv_falls_back_to_rdp_where_it_does_not_apply():
    full_batch = [(2.0, 1.0, 5)]  # q = 1: PRV's numerics do not apply
    s = spent(full_batch, 1e-5, "prv")
    assert s.by_accountant["prv"] is None and s.reported_by == "rdp" and s.reported == epsilon(full_batch, 1e-5, "rdp")
    assert epsilon([], 1e-5) == 0.0
    assert epsilon([(0.0, 0.1, 3)], 1e-5) == math.inf


def test_noise_is_planned_to_meet_the_target():
    sigma = noise_multiplier_for(4.0, 1e-5, 0.02, 500, "rdp")
    assert 3.9 < epsilon([(sigma, 0.02, 500)], 1e-5, "rdp") <= 4.0
    assert noise_multiplier_for(4.0, 1e-5, 0.02, 500, "prv") < sigma  # PRV is tighter: less noise
    assert noise_multiplier_for(math.inf, 1e-5, 0.02, 500) == 0.0
    with pytest.raises(BudgetError):
        noise_multiplier_for(-1.0, 1e-5, 0.02, 500)
    assert default_delta(50) == 1e-5
    assert default_delta(1_000_000) == pytest.approx(1e-7) and default_delta(1_000_000) < 1 / 1_000_000


# ---------------------------------------------------------------------- DP-SGD
SETTINGS = TrainSettings(epochs=2, batch_size=16, lr=0.01, history=8, positives=2, negatives=16, seed=3)


def _trained(data, dp, seed=0):
    torch.manual_seed(seed)
    model = InterestModel(3, dim=8, hidden=16, num_local_items=data.num_items)
    result = train_local(model, data, SETTINGS, dp=dp)
    return result, {k: v.clone() for k, v in model.state_dict().items()}


def test_ghost_clipping_gives_the_same_update_as_per_sample_gradients(planted_shop):
    data = planted_shop()
    common = dict(noise_multiplier=0.0, max_grad_norm=0.05, sample_rate=16 / 120, delta=1e-5, noise_seed=1)
    _, ghost = _trained(data, DPSettings(**common, grad_sample_mode="ghost"))
    _, hooks = _trained(data, DPSettings(**common, grad_sample_mode="hooks"))
    _, plain = _trained(data, None)
    assert max((ghost[k] - hooks[k]).abs().max().item() for k in ghost) < 1e-4
    assert max((ghost[k] - plain[k]).abs().max().item() for k in ghost) > 1e-3  # clipping changed the update


def test_dp_training_counts_steps_and_is_deterministic_under_a_seed(planted_shop):
    data = planted_shop()
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, delta=1e-5, noise_seed=7)
    (r1, s1), (_, s2) = _trained(data, dp), _trained(data, dp)
    assert r1.dp_history == [(1.0, 0.1, 20)] and r1.steps == 20  # 2 epochs of round(1/q) = 10 steps
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    _, s3 = _trained(data, DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, delta=1e-5, noise_seed=8))
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)


def test_empty_poisson_samples_still_take_noisy_steps(planted_shop):
    data = planted_shop()
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.005, delta=1e-5, noise_seed=1)
    torch.manual_seed(0)
    model = InterestModel(3, dim=8, hidden=16, num_local_items=data.num_items)
    result = train_local(model, data, TrainSettings(epochs=1, batch_size=16, history=8, positives=2, negatives=16), dp=dp)
    after = model.state_dict()
    assert result.steps == 200  # about half of these samples are empty; each one is a step
    torch.manual_seed(0)
    before = InterestModel(3, dim=8, hidden=16, num_local_items=data.num_items).state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # noise moved every parameter


@pytest.fixture
def shop_with_user_a(make_catalog, make_events):
    """A shop of users A, B and C: B and C fixed, A's events given."""

    def build(events_a):
        rows = [
            ("B", "i1", 1, "purchase", 1),
            ("B", "i2", 3, "view", 2),
            ("B", "i3", 4, "cart", 1),
            ("B", "i4", 6, "purchase", 1),
            ("C", "i2", 2, "purchase", 1),
            ("C", "i5", 5, "view", 1),
            ("C", "i0", 9, "purchase", 1),
        ] + events_a
        items = [f"i{i}" for i in range(8)]
        feats = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
        return build_shop_data("s", make_events(rows), make_events(rows[:0]), make_catalog(items), feats)

    return build


@pytest.mark.parametrize("content_dim", [0, 3])
def test_a_users_gradient_depends_only_on_that_users_data(content_dim, shop_with_user_a):
    """Changing user A's interactions leaves user B's per-sample gradient unchanged (also with
    the content term, whose text profile is built from the user's own history only)."""
    original = shop_with_user_a([("A", "i0", 0, "view", 1), ("A", "i1", 2, "purchase", 1)])
    changed = shop_with_user_a([("A", "i6", 1, "purchase", 5), ("A", "i7", 30, "cart", 1), ("A", "i3", 40, "purchase", 2)])
    torch.manual_seed(0)
    model = InterestModel(3, dim=8, hidden=16, num_local_items=8, content_dim=content_dim)
    features = torch.from_numpy(original.item_features)
    grads, grads_a = [], []
    for data in (original, changed):
        users = np.arange(data.num_users)  # A, B, C in one batch
        batch = RowSampler(data, history=4, positives=2, negatives=6).training_batch(users, np.random.default_rng(5))
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        model.zero_grad()
        model.recommendation_loss(batch, features).sum().backward()
        b, a = list(data.users).index("B"), list(data.users).index("A")
        grads.append({n: p.grad_sample[b].clone() for n, p in model.named_parameters()})
        grads_a.append(torch.cat([p.grad_sample[a].flatten() for p in model.parameters()]))
        gsm._close()
    assert list(original.users) == list(changed.users) == ["A", "B", "C"]
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name
    # ...while A's own gradient did change (the check is not vacuous)
    assert not torch.allclose(grads_a[0], grads_a[1])


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_ledger_history_of_many_rounds_is_composed_exactly(accountant):
    """One entry per round (as the ledger holds them) gives the same ε as the run composed by
    Opacus in one go; interleaved mechanisms are merged by (σ, q) without changing ε."""
    a, b = (1.3, 0.05, 20), (0.9, 0.02, 50)
    per_round = [a, (a[0], a[1], 0), a, b, a]
    reference = PRVAccountant() if accountant == "prv" else RDPAccountant()
    reference.history = [(a[0], a[1], 3 * a[2]), b]
    assert epsilon(per_round, 1e-5, accountant) == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-9)
    assert epsilon(per_round, 1e-5, accountant) == pytest.approx(epsilon([b, (a[0], a[1], 3 * a[2])], 1e-5, accountant), rel=1e-6)


@pytest.mark.parametrize("rows, d_in, d_out", [(9, 3, 2), (2, 6, 5), (1, 4, 4)])
@pytest.mark.parametrize("flat", [False, True])
def test_linear_norm_sample_equals_the_per_user_gradient_norm(rows, d_in, d_out, flat, monkeypatch):
    """Both routes (direct per-user gradient when T(d_in+d_out) > d_in d_out, ghost otherwise),
    the blocked direct route, 2-D inputs and the bias all match explicit per-user gradients."""
    import fedgraph.training.dp as dp_module

    layer = torch.nn.Linear(d_in, d_out)
    g = torch.Generator().manual_seed(rows * 10 + d_in)
    shape = (5, d_in) if flat else (5, rows, d_in)
    a = torch.randn(*shape, generator=g)
    backprops = torch.randn(*shape[:-1], d_out, generator=g)
    a3, g3 = a.reshape(5, -1, d_in), backprops.reshape(5, -1, d_out)
    explicit_w = torch.stack([(g3[b].T @ a3[b]).norm() for b in range(5)])
    explicit_b = torch.stack([g3[b].sum(0).norm() for b in range(5)])
    monkeypatch.setattr(dp_module, "DIRECT_NORM_ELEMENTS", d_in * d_out * 2)  # blocks of 2 users
    norms = dp_module.linear_norm_sample(layer, [a], backprops)
    assert torch.allclose(norms[layer.weight], explicit_w, atol=1e-5)
    assert torch.allclose(norms[layer.bias], explicit_b, atol=1e-5)


@pytest.mark.parametrize("content_dim", [0, 3])
def test_dp_training_uses_fedgraphs_norm_routines_and_clips_per_user(content_dim, shop_with_user_a):
    """The wrapper takes fedgraph's routines for its layers, and a DP step's per-user norms equal
    the norms of per-user gradients computed by Opacus' hooks (so clipping is per user)."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping

    from fedgraph.training.dp import UserGradNormModule, embedding_norm_sample, linear_norm_sample

    assert UserGradNormModule.NORM_SAMPLERS[torch.nn.Linear] is linear_norm_sample
    assert UserGradNormModule.NORM_SAMPLERS[torch.nn.Embedding] is embedding_norm_sample
    opacus_own = GradSampleModuleFastGradientClipping.NORM_SAMPLERS
    assert opacus_own[torch.nn.Linear] is not linear_norm_sample and opacus_own[torch.nn.Embedding] is not embedding_norm_sample
    data = shop_with_user_a([("A", "i0", 0, "view", 1), ("A", "i1", 2, "purchase", 1)])
    batch = RowSampler(data, history=4, positives=2, negatives=6).training_batch(np.arange(data.num_users), np.random.default_rng(5))
    features = torch.from_numpy(data.item_features)
    torch.manual_seed(0)
    model = InterestModel(3, dim=8, hidden=16, num_local_items=8, content_dim=content_dim)
    torch.nn.init.normal_(model.local.weight, std=0.1)
    hooks = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    model.recommendation_loss(batch, features).sum().backward()
    expected = torch.cat([p.grad_sample.flatten(1) for p in model.parameters()], dim=1).norm(dim=1)
    hooks._close()
    model.zero_grad(set_to_none=True)
    ghost = UserGradNormModule(model, batch_first=True, loss_reduction="sum", max_grad_norm=1.0)
    model.recommendation_loss(batch, features).sum().backward()
    assert torch.allclose(ghost.get_norm_sample(), expected, rtol=1e-4, atol=1e-6)
    ghost._close()


@pytest.mark.parametrize("content_dim", [0, 3])
def test_norm_pass_clips_like_opacus_two_passes_without_weight_gradients_in_the_first(content_dim, shop_with_user_a):
    """fedgraph's first pass (gradients of the layers' outputs only) gives the same clipped
    gradient as Opacus' DPLossFastGradientClipping (a full first backward), and no parameter
    receives a gradient before the clipping coefficients are taken."""
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    from fedgraph.training.dp import NormPass, UserGradNormModule

    data = shop_with_user_a([("A", "i0", 0, "view", 1), ("A", "i1", 2, "purchase", 1)])
    batch = RowSampler(data, history=4, positives=2, negatives=6).training_batch(np.arange(data.num_users), np.random.default_rng(5))
    features = torch.from_numpy(data.item_features)

    def clipped(use_norm_pass: bool) -> tuple[dict[str, torch.Tensor], list[int]]:
        torch.manual_seed(0)
        model = InterestModel(3, dim=8, hidden=16, num_local_items=8, content_dim=content_dim)
        torch.nn.init.normal_(model.local.weight, std=0.1)
        wrapped = UserGradNormModule(model, batch_first=True, loss_reduction="mean", max_grad_norm=0.01)
        optimizer = DPOptimizerFastGradientClipping(
            torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0, max_grad_norm=0.01, expected_batch_size=len(batch)
        )
        grads_before_coefficients: list[int] = []
        arrived: list[int] = [0]
        for p in model.parameters():
            p.register_hook(lambda g, arrived=arrived: arrived.__setitem__(0, arrived[0] + 1))
        coefficients = wrapped.get_clipping_coef
        wrapped.get_clipping_coef = lambda: (grads_before_coefficients.append(arrived[0]), coefficients())[1]
        norm_pass = NormPass(wrapped)
        per_user = model.recommendation_loss(batch, features)
        if use_norm_pass:
            norm_pass.backward(per_user)
        else:
            DPLossFastGradientClipping(wrapped, optimizer, _MeanLoss(), loss_reduction="mean")(per_user).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        norm_pass.close()
        wrapped._close()
        return grads, grads_before_coefficients

    ours, ours_before = clipped(True)
    opacus, opacus_before = clipped(False)
    assert ours.keys() == opacus.keys()
    assert max((ours[k] - opacus[k]).abs().max().item() for k in ours) < 1e-6
    assert ours_before == [0] and opacus_before[0] > 0  # Opacus' first pass built weight gradients


def test_norm_pass_refuses_a_layer_that_got_no_norm():
    """A trainable layer whose output does not reach the loss gets no fresh per-user norm: the
    norm pass raises instead of clipping with a stale one."""
    from fedgraph.training.dp import NormPass, UserGradNormModule

    class WithDeadLayer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.dead = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.dead(x)
            return self.used(x).squeeze(-1)

    model = WithDeadLayer()
    wrapped = UserGradNormModule(model, batch_first=True, loss_reduction="mean", max_grad_norm=1.0)
    norm_pass = NormPass(wrapped)
    with pytest.raises(RuntimeError, match="dead.weight"):
        norm_pass.backward(model(torch.randn(4, 3)))
    norm_pass.close()
    wrapped._close()


class _MeanLoss(torch.nn.Module):
    reduction = "mean"

    def forward(self, per_user: torch.Tensor, _target: object = None) -> torch.Tensor:
        return per_user if self.reduction == "none" else per_user.mean()


def test_embedding_norm_sample_equals_the_per_user_gradient_norm():
    """The fast ghost norm of the shop-private item table matches explicit per-user gradients
    (repeated look-ups of one item by one user are summed before the norm) and Opacus' own."""
    from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample

    from fedgraph.training.dp import embedding_norm_sample

    g = torch.Generator().manual_seed(3)
    table = torch.nn.Embedding(7, 5)
    ids = torch.randint(0, 7, (4, 9), generator=g)
    ids[0, :4] = 2  # one user looks the same item up several times
    backprops = torch.randn(4, 9, 5, generator=g)
    explicit = []
    for b in range(4):
        grad = torch.zeros(7, 5).index_add_(0, ids[b], backprops[b])
        explicit.append(grad.norm())
    fast = embedding_norm_sample(table, [ids], backprops)[table.weight]
    assert torch.allclose(fast, torch.stack(explicit), atol=1e-6)
    assert torch.allclose(fast, compute_embedding_norm_sample(table, [ids], backprops)[table.weight], atol=1e-6)


# ---------------------------------------------------------------------- ledger
def _ledger_with(tmp_path, n=3):
    ledger = PrivacyLedger(tmp_path / "shop")
    for r in range(n):
        ledger.append("round", round=r, epsilon=0.5 * r, history=[[1.0, 0.1, 10]])
    return ledger


def test_ledger_persists_and_chains(tmp_path):
    ledger = _ledger_with(tmp_path)
    again = PrivacyLedger(tmp_path / "shop")
    entries = again.verify()
    assert [e["round"] for e in entries] == [0, 1, 2] and [e["seq"] for e in entries] == [0, 1, 2]
    assert entries[1]["prev"] == entries[0]["mac"]
    assert oct((tmp_path / "shop" / "ledger.key").stat().st_mode & 0o777) == "0o600"
    again.append("round", round=3, epsilon=2.0, history=[])
    assert len(ledger.verify()) == 4


@pytest.mark.parametrize(
    "tamper, message",
    [
        ("edit", "fails its integrity check"),
        ("truncate", "truncated or rolled back"),
        ("drop_middle", "removed or reordered"),
        ("delete_head", "head.json is missing"),
        ("delete_ledger", "truncated or rolled back"),
        ("reset_all_but_key", "head.json is missing"),
        ("garbage", "not valid JSON"),
    ],
)
def test_ledger_refuses_tampering(tmp_path, tamper, message):
    ledger = _ledger_with(tmp_path)
    lines = ledger.path.read_text().splitlines(keepends=True)
    if tamper == "edit":
        entry = json.loads(lines[1])
        entry["epsilon"] = 0.0
        lines[1] = json.dumps(entry, sort_keys=True) + "\n"
        ledger.path.write_text("".join(lines))
    elif tamper == "truncate":
        ledger.path.write_text("".join(lines[:2]))
    elif tamper == "drop_middle":
        ledger.path.write_text(lines[0] + lines[2])
    elif tamper == "delete_head":
        ledger.head_path.unlink()
    elif tamper == "delete_ledger":
        ledger.path.unlink()
    elif tamper == "reset_all_but_key":
        ledger.path.unlink()
        ledger.head_path.unlink()
    elif tamper == "garbage":
        ledger.path.write_text(lines[0] + "{oops\n" + "".join(lines[2:]))
    with pytest.raises(LedgerTamperedError, match=message):
        PrivacyLedger(tmp_path / "shop").verify()
    with pytest.raises(LedgerTamperedError):
        PrivacyLedger(tmp_path / "shop").append("round", round=9, history=[])


def test_ledger_recovers_from_a_crash_between_entry_and_head(tmp_path):
    ledger = _ledger_with(tmp_path)
    head_before = ledger.head_path.read_text()
    ledger.append("round", round=3, history=[])
    ledger.head_path.write_text(head_before)  # as if the process died before the head was written
    assert len(ledger.verify(repair=True)) == 4
    assert json.loads(ledger.head_path.read_text())["count"] == 4
    # a torn, never-committed last line is dropped
    with open(ledger.path, "ab") as f:
        f.write(b'{"kind": "round", "seq": 4, "tr')
    assert len(ledger.verify(repair=True)) == 4
    assert ledger.path.read_bytes().endswith(b"\n")


# ---------------------------------------------------------------------- budget
def test_budget_plans_noise_and_refuses_a_round_that_would_overspend(tmp_path):
    cfg = PrivacyConfig(enabled=True, target_epsilon=2.0, delta=1e-5)
    budget = open_budget(tmp_path / "b", shop="s", users=100, config=cfg, rounds=3, local_epochs=1, batch_size=10)
    plan = budget.plan
    assert plan["sample_rate"] == pytest.approx(0.1) and plan["steps_per_round"] == 10 and plan["planned_steps"] == 30
    assert 1.9 < plan["planned_epsilon"] <= 2.0
    for r in range(1, 4):
        assert budget.next_round_fits()
        budget.record_round(r, "v", [(plan["noise_multiplier"], 0.1, 10)])
    assert not budget.next_round_fits()
    skip = budget.record_skip(4, "v")
    assert skip["kind"] == "skip" and "budget" in skip["reason"] and skip["epsilon"] <= 2.0
    rounds = list(budget.ledger.rounds())
    assert [e["epsilon"] for e in rounds] == sorted(e["epsilon"] for e in rounds)
    assert rounds[-1]["epsilon_by_accountant"]["prv"] < rounds[-1]["epsilon_by_accountant"]["rdp"]
    # the ledger survives a restart; changing the plan afterwards is refused
    again = open_budget(tmp_path / "b", shop="s", users=100, config=cfg, rounds=3, local_epochs=1, batch_size=10)
    assert not again.next_round_fits() and again.spent().reported == pytest.approx(rounds[-1]["epsilon"])
    with pytest.raises(BudgetError, match="target_epsilon"):
        open_budget(
            tmp_path / "b",
            shop="s",
            users=100,
            config=PrivacyConfig(target_epsilon=8.0, delta=1e-5),
            rounds=3,
            local_epochs=1,
            batch_size=10,
        )


def test_a_replayed_round_is_charged_again(tmp_path):
    """Issue 13.7: a round replayed after a resume trained on private data twice; the ledger counts both passes."""
    cfg = PrivacyConfig(enabled=True, target_epsilon=4.0, delta=1e-5)
    budget = open_budget(tmp_path / "b", shop="s", users=100, config=cfg, rounds=3, local_epochs=1, batch_size=10)
    sigma = budget.plan["noise_multiplier"]
    budget.record_round(1, "v1", [(sigma, 0.1, 10)])
    budget.record_round(2, "v2", [(sigma, 0.1, 10)])
    twice = budget.spent().reported
    resumed = open_budget(tmp_path / "b", shop="s", users=100, config=cfg, rounds=3, local_epochs=1, batch_size=10)
    resumed.record_round(2, "v2", [(sigma, 0.1, 10)])  # the replay of round 2
    assert resumed.spent().reported > twice
    assert [e["round"] for e in resumed.ledger.rounds()] == [1, 2, 2]


@pytest.mark.parametrize("delta", [0.0, 1e-5])
def test_a_growing_shop_keeps_its_planned_sample_rate_and_delta(tmp_path, delta):
    """A daemon's shop gains customers between rounds: the plan's q and δ stay (Poisson sampling at a
    fixed q is valid for any number of users); a changed target is still refused."""
    cfg = PrivacyConfig(enabled=True, target_epsilon=8.0, delta=delta)
    first = open_budget(tmp_path / "b", shop="s", users=500, config=cfg, rounds=4, local_epochs=1, batch_size=32)
    first.record_round(1, "v", [(first.plan["noise_multiplier"], first.plan["sample_rate"], first.plan["steps_per_round"])])
    grown = open_budget(tmp_path / "b", shop="s", users=501, config=cfg, rounds=4, local_epochs=1, batch_size=32)
    assert grown.plan["sample_rate"] == pytest.approx(32 / 500) and grown.delta == first.delta
    assert grown.settings(None).sample_rate == pytest.approx(32 / 500) and grown.next_round_fits()
    shrunk = open_budget(tmp_path / "b", shop="s", users=20, config=cfg, rounds=4, local_epochs=1, batch_size=32)
    assert shrunk.plan == first.plan
    with pytest.raises(BudgetError, match="target_epsilon"):
        open_budget(
            tmp_path / "b",
            shop="s",
            users=501,
            config=PrivacyConfig(target_epsilon=4.0, delta=delta),
            rounds=4,
            local_epochs=1,
            batch_size=32,
        )


# ---------------------------------------------------------------------- noise source
@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_unseeded_dp_training_draws_noise_and_sampling_from_the_csprng(monkeypatch, mode, planted_shop):
    """Without a seed, neither the noise nor the Poisson sample may come from torch's Mersenne
    Twister (predictable from its seed): both come from fedgraph.privacy.csprng."""
    import opacus.optimizers.optimizer as opacus_optimizer
    import opacus.optimizers.optimizer_fast_gradient_clipping as opacus_fast
    import opacus.utils.uniform_sampler as opacus_sampler

    from fedgraph.privacy import csprng

    def refuse(*_a, **_k):
        raise AssertionError("seeded torch noise or sampling used without a seed")

    def zero_only(std, reference, **kwargs):
        if std != 0:
            refuse()
        return torch.zeros_like(reference)

    monkeypatch.setattr(opacus_optimizer, "_generate_noise", zero_only)
    monkeypatch.setattr(opacus_fast, "_generate_noise", zero_only)
    monkeypatch.setattr(opacus_sampler.UniformWithReplacementSampler, "__iter__", refuse)
    drawn = []
    real = csprng.SecureRandom.normal
    monkeypatch.setattr(csprng.SecureRandom, "normal", lambda self, n: drawn.append(n) or real(self, n))
    data = planted_shop()
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, delta=1e-5, noise_seed=None, grad_sample_mode=mode)
    result, after = _trained(data, dp)
    params = sum(p.numel() for p in InterestModel(3, dim=8, hidden=16, num_local_items=data.num_items).parameters() if p.requires_grad)
    assert result.steps == 20 and sum(drawn) == 20 * 4 * params  # every step, every parameter, four draws (Opacus' secure mode)
    _, again = _trained(data, dp)
    assert any(not torch.equal(after[k], again[k]) for k in after)  # not reproducible: the key is fresh


def test_secure_random_is_uniform_gaussian_and_unpredictable():
    from scipy import stats

    from fedgraph.privacy.csprng import SecurePoissonSampler, SecureRandom, secure_noise_like

    a, b = SecureRandom(), SecureRandom()
    u = a.uniform(200_000)
    assert 0 < u.min() and u.max() < 1 and stats.kstest(u, "uniform").pvalue > 1e-4
    z = a.normal(200_001)
    assert len(z) == 200_001 and stats.kstest(z, "norm").pvalue > 1e-4
    assert not np.array_equal(a.uniform(8), b.uniform(8))
    noise = secure_noise_like(torch.zeros(100_000), 3.0, a)
    assert noise.dtype == torch.float32 and abs(noise.std().item() - 3.0) < 0.05 and abs(noise.mean().item()) < 0.05
    sizes = [len(i) for i in SecurePoissonSampler(num_samples=1000, sample_rate=0.05, steps=200, rng=a)]
    assert len(sizes) == 200 and abs(np.mean(sizes) - 50) < 2

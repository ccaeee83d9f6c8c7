"""User-level DP-SGD for the interest model with Opacus (one user = one sample).

Each step draws a Poisson sample of the shop's users (Opacus'
:class:`~opacus.utils.uniform_sampler.UniformWithReplacementSampler`: each user in
independently with probability ``q``), computes every sampled user's loss on a batch row
that holds only that user's history (see :class:`fedgraph.models.InterestModel`), clips
each user's whole gradient to ``C`` and adds ``N(0, (σC)²)`` noise to the sum
(Opacus' DP optimizer), then divides by the expected batch size ``q·n``.

Per-user gradient norms come from Opacus' ghost clipping by default
(:class:`~opacus.grad_sample.GradSampleModuleFastGradientClipping`, as
:class:`UserGradNormModule` with exact but cheaper norm routines for this model's layers):
two backward passes, and no ``batch × parameters`` tensor is ever built for a large layer.
The first pass (:class:`NormPass`) asks autograd only for the gradients of the layers'
outputs, which is all the norms need: Opacus' own first pass is a full ``backward()`` whose
weight gradients are thrown away.
``grad_sample_mode="hooks"`` uses Opacus' classic per-sample gradients instead (for
comparison and tests).

Without ``noise_seed`` the noise and the Poisson sampling come from a CSPRNG
(:mod:`fedgraph.privacy.csprng`, what Opacus' ``secure_mode`` would give); with a seed, from
seeded torch generators (reproducible simulations, predictable by whoever knows the seed).

Steps are counted by an Opacus accountant attached to the optimizer's step hook, so the
history returned is exactly what ran, including steps whose Poisson sample was empty (those
still add noise: skipping them would leak that the sample was empty).
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import torch
from opacus.accountants import RDPAccountant
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.grad_sample.linear import compute_linear_norm_sample
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from fedgraph.models.interest_model import InterestModel
from fedgraph.privacy import DPSettings
from fedgraph.privacy.csprng import SecurePoissonSampler, SecureRandom, secure_noise_like
from fedgraph.shop import ShopData
from fedgraph.training.rows import RowSampler
from fedgraph.training.settings import TrainResult, TrainSettings

#: Largest per-user-gradient block (users x out x in elements) that linear_norm_sample builds at once:
#: 1 MiB of floats, a few users of the item tower's first layer (memory figures: simulations/RESULTS.md, 'Implementation measurements').
DIRECT_NORM_ELEMENTS = 1 << 18


def linear_norm_sample(layer: nn.Linear, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-user gradient norms of a linear layer, by the cheaper of two exact routes.

    For user ``b`` with inputs ``a_t`` and output gradients ``g_t`` (``t`` over the user's
    ``T`` rows), the weight gradient is ``G_b = sum_t g_t a_t^T`` and
    ``||G_b||^2 = sum_{t,s} (g_t . g_s)(a_t . a_s)``. Opacus always takes the second (ghost)
    form, ``T^2 (d_in + d_out)`` work per user; building ``G_b`` takes ``T d_in d_out``, which is
    cheaper when ``T (d_in + d_out) > d_in d_out`` -- here the item tower (T = 84 items a user,
    769 -> 64) and the small attention layers. The direct route works on blocks of at most
    :data:`DIRECT_NORM_ELEMENTS` elements, so no batch x parameters tensor is built for a large
    layer. The bias norm is ``||sum_t g_t||`` (Opacus builds a ``T x T`` matrix for it).
    """
    if backprops.dim() == 2:  # one row per user: Opacus' closed form is already the cheapest
        return compute_linear_norm_sample(layer, activations, backprops)
    g = backprops
    a = activations[0].to(g.dtype)
    n = g.shape[0]
    out: dict[nn.Parameter, torch.Tensor] = {}
    a = a.reshape(n, -1, a.shape[-1])
    g = g.reshape(n, -1, g.shape[-1])
    rows, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
    if layer.weight.requires_grad:
        if rows * (d_in + d_out) > d_in * d_out:
            block = max(1, DIRECT_NORM_ELEMENTS // (d_in * d_out))
            # vector_norm reduces in place of pow(2).sum(): no second block-sized temporary.
            norms = torch.cat(
                [
                    torch.linalg.vector_norm(torch.bmm(g[i : i + block].transpose(1, 2), a[i : i + block]), dim=(1, 2))
                    for i in range(0, n, block)
                ]
            )
        else:
            norms = (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2)).clamp(min=0).sqrt()
        out[layer.weight] = norms
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = g.sum(1).norm(dim=1)
    return out


def embedding_norm_sample(
    layer: nn.Embedding, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-user gradient norms of an embedding table (here the shop-private item table) without
    per-user gradients.

    User ``b``'s gradient of row ``v`` is the sum of the output gradients at the positions where
    ``b`` looked ``v`` up, so its squared norm is the sum over the distinct ``(b, v)`` pairs of
    ``||sum of those output gradients||^2``. Same result as Opacus'
    ``compute_embedding_norm_sample``, but the distinct pairs are found with a 1-D
    ``torch.unique`` over ``b * num_embeddings + v`` instead of ``torch.unique(dim=0)`` over
    pairs, which on CPU loops row by row in Python-visible ops (its cost:
    simulations/RESULTS.md, 'Implementation measurements'; ``simulations/bench_dp_step.py``).
    """
    ids = activations[0]
    batch = ids.shape[0]
    ids = ids.reshape(batch, -1)
    grads = backprops.reshape(-1, backprops.shape[-1])
    rows = torch.arange(batch, device=ids.device).repeat_interleave(ids.shape[1])
    keys = rows * layer.num_embeddings + ids.reshape(-1).to(rows.dtype)
    pairs, position = torch.unique(keys, return_inverse=True)
    summed = grads.new_zeros(len(pairs), grads.shape[1]).index_add_(0, position, grads)
    squared = grads.new_zeros(batch).scatter_add_(0, pairs // layer.num_embeddings, summed.pow(2).sum(1))
    return {layer.weight: squared.sqrt()}


class UserGradNormModule(GradSampleModuleFastGradientClipping):
    """Opacus' ghost-clipping wrapper with fedgraph's per-user norm routines for its layers
    (:func:`linear_norm_sample`, :func:`embedding_norm_sample`); Opacus' own for any other.
    The table is this class's own, so Opacus' global registry is left as it is."""

    NORM_SAMPLERS = {
        **GradSampleModuleFastGradientClipping.NORM_SAMPLERS,
        nn.Linear: linear_norm_sample,
        nn.Embedding: embedding_norm_sample,
    }


class NormPass:
    """The first of ghost clipping's two backward passes, without weight gradients.

    Opacus' :class:`~opacus.utils.fast_gradient_clipping_utils.DPTensorFastGradientClipping`
    runs ``loss.backward(retain_graph=True)``, which also computes every weight gradient, then
    zeroes them: only the layers' output gradients (the "backprops" its hooks turn into per-user
    norms) are used. This class keeps each trainable layer's raw output (a forward hook, which
    runs before the backward hook wraps the output) and runs
    ``torch.autograd.grad(loss, outputs, retain_graph=True)``: autograd then computes just what
    the outputs' gradients need, Opacus' backward hooks fire as before, and no weight gradient is
    built. The clipping coefficients and the second pass are Opacus' own
    (:meth:`~opacus.grad_sample.GradSampleModuleFastGradientClipping.get_clipping_coef`).
    Every trainable parameter must receive a fresh norm from this pass; if one does not (a layer
    whose output does not reach the loss), :meth:`backward` raises instead of clipping with a
    stale norm.
    """

    def __init__(self, wrapped: GradSampleModuleFastGradientClipping) -> None:
        self.wrapped = wrapped
        self.outputs: list[torch.Tensor] = []
        self.parameters = {p: name for name, p in wrapped._module.named_parameters() if p.requires_grad}
        self._handles = [
            module.register_forward_hook(self._keep_output)
            for module in wrapped._module.modules()
            if any(p.requires_grad for p in module.parameters(recurse=False))
        ]

    def _keep_output(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        if torch.is_grad_enabled() and output.requires_grad:
            self.outputs.append(output)

    def backward(self, per_user: torch.Tensor) -> None:
        """Clip each user's gradient into ``p.grad``, from the per-user losses ``per_user`` ``[B]``."""
        outputs, self.outputs = self.outputs, []
        for p in self.parameters:
            p._norm_sample = None
        # Reduced as the wrapper was told (it rescales the output gradients by the batch size for "mean").
        reduced = per_user.mean() if self.wrapped.loss_reduction == "mean" else per_user.sum()
        torch.autograd.grad(reduced, outputs, retain_graph=True, allow_unused=True)
        missing = [name for p, name in self.parameters.items() if getattr(p, "_norm_sample", None) is None]
        if missing:
            raise RuntimeError(f"ghost clipping got no per-user gradient norm for {missing}: their layers' outputs do not reach the loss")
        coefficients = self.wrapped.get_clipping_coef()
        self.wrapped.disable_hooks()
        try:
            (coefficients.to(per_user.device) * per_user).sum().backward()
        finally:
            self.wrapped.enable_hooks()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self.outputs = []


class _SecureNoise:
    """Mixin for Opacus' DP optimizers: the Gaussian noise comes from :mod:`fedgraph.privacy.csprng`.

    Opacus' own ``add_noise`` runs with a zero multiplier (it then only moves the clipped sum into
    ``.grad`` and marks it processed), and the noise of the configured multiplier is added here;
    the accountant's step hook, which runs afterwards, sees the configured multiplier.
    """

    _csprng: SecureRandom

    @classmethod
    def over(cls, optimizer_class: type, rng: SecureRandom) -> type:
        return type(f"Secure{optimizer_class.__name__}", (cls, optimizer_class), {"_csprng": rng})

    def add_noise(self) -> None:
        multiplier = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier)
        saved = self.noise_multiplier, self.__dict__.get("_adjusted_noise_multiplier")
        self.noise_multiplier = 0.0
        if saved[1] is not None:
            self._adjusted_noise_multiplier = 0.0
        try:
            super().add_noise()  # type: ignore[misc]
        finally:
            self.noise_multiplier = saved[0]
            if saved[1] is not None:
                self._adjusted_noise_multiplier = saved[1]
        std = multiplier * self.max_grad_norm
        for p in self.params:  # type: ignore[attr-defined]
            p.grad.add_(secure_noise_like(p.grad, std, self._csprng))


def steps_per_epoch(sample_rate: float) -> int:
    """Steps in one expected pass over the users: ``round(1/q)`` (at least 1)."""
    return max(1, int(round(1.0 / sample_rate)))


def train_dp(
    model: InterestModel,
    data: ShopData,
    settings: TrainSettings,
    dp: DPSettings,
    *,
    device: torch.device,
    negative_range: np.ndarray | None = None,
) -> TrainResult:
    started = time.perf_counter()
    model.to(device).train()
    features = torch.from_numpy(data.item_features).to(device)
    users = data.trainable_users()
    if len(users) == 0:
        return TrainResult.nothing_trained()
    sampler_rows = RowSampler(
        data, history=settings.history, positives=settings.positives, negatives=settings.negatives, negative_range=negative_range
    )
    secure = dp.noise_seed is None
    if secure:  # noise and Poisson sampling from the CSPRNG; the rows' own shuffling needs no secrecy
        rng = SecureRandom()
        sample_gen = noise_gen = None
        row_rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    else:
        sample_gen = torch.Generator().manual_seed(dp.noise_seed)
        noise_gen = torch.Generator(device=device).manual_seed(dp.noise_seed + 1)
        row_rng = np.random.default_rng(dp.noise_seed + 2)

    shared = model.shared_parameters()
    anchor = [p.detach().clone() for p in shared] if settings.proximal_mu > 0 else None
    base = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    expected = max(1e-9, dp.sample_rate * len(users))
    ghost = dp.grad_sample_mode == "ghost"
    if ghost:
        wrapped = UserGradNormModule(
            model, batch_first=True, loss_reduction="mean", max_grad_norm=dp.max_grad_norm, use_ghost_clipping=True
        )
        optimizer = (_SecureNoise.over(DPOptimizerFastGradientClipping, rng) if secure else DPOptimizerFastGradientClipping)(
            base,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=expected,
            loss_reduction="mean",
            generator=noise_gen,
        )
        norm_pass = NormPass(wrapped)
    else:
        wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        optimizer = (_SecureNoise.over(DPOptimizer, rng) if secure else DPOptimizer)(
            base,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=expected,
            loss_reduction="mean",
            generator=noise_gen,
        )
    # Opacus' DP optimizer divides the clipped sum by the expected batch size, as DP-SGD does
    # with Poisson sampling; the actual batch size is private and never used.
    optimizer.expected_batch_size = expected
    accountant = RDPAccountant()
    optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=dp.sample_rate))
    per_epoch = steps_per_epoch(dp.sample_rate)
    if secure:
        poisson = SecurePoissonSampler(num_samples=len(users), sample_rate=dp.sample_rate, steps=per_epoch * settings.epochs, rng=rng)
    else:
        poisson = UniformWithReplacementSampler(
            num_samples=len(users), sample_rate=dp.sample_rate, generator=sample_gen, steps=per_epoch * settings.epochs
        )
    losses: list[float] = []
    quiet = warnings.catch_warnings()
    quiet.__enter__()
    # Opacus' hooks fire on module outputs when the inputs (public item features) need no
    # gradient; PyTorch warns about that on every step, and it is expected here.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    try:
        for indices in poisson:
            optimizer.zero_grad(set_to_none=True)
            picked = users[np.asarray(indices, dtype=np.int64)] if len(indices) else users[:0]
            if len(picked) == 0:
                # An empty Poisson sample still takes a (pure-noise) step.
                for p in model.parameters():
                    p.grad = torch.zeros_like(p)
                    if not ghost:
                        p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            else:
                batch = sampler_rows.training_batch(picked, row_rng).to(device)
                per_user = model.recommendation_loss(batch, features)
                if ghost:
                    norm_pass.backward(per_user)
                else:
                    per_user.mean().backward()
                losses.append(float(per_user.detach().mean()))
            optimizer.step()
            if anchor is not None:  # FedProx: a data-independent proximal step after the private one
                with torch.no_grad():
                    for p, a in zip(shared, anchor):
                        p.sub_(settings.lr * settings.proximal_mu * (p - a))
    finally:
        quiet.__exit__(None, None, None)
        if ghost:
            norm_pass.close()
        wrapped._close()
        for p in model.parameters():
            p.grad = None
    steps = sum(n for _, _, n in accountant.history)
    return TrainResult(
        loss=float(np.mean(losses)) if losses else float("nan"),
        users=int(len(users)),
        steps=int(steps),
        seconds=time.perf_counter() - started,
        dp_history=[(float(s), float(q), int(n)) for s, q, n in accountant.history],
    )

"""Benchmark: one DP-SGD step against one plain step on the same batch (time and peak memory).

A synthetic shop (``--users`` users, ``--items`` catalog items, 769 public features per item,
the default model with its shop-private item table) is trained for ``--steps`` steps on the
*same* batch of ``--batch`` users in four modes, each in a fresh subprocess:

* ``plain``: Adam on the mean loss;
* ``dp-ghost``: Opacus ghost clipping with fedgraph's norm routines (``UserGradNormModule``;
  per-user gradient norms, no batch × parameters tensor),
  clipping and Gaussian noise, then Adam (fedgraph's default: the norm pass is
  ``fedgraph.training.dp.NormPass``, which computes no weight gradients);
* ``dp-ghost-opacus-pass``: the same, but with Opacus' own first pass (a full ``backward()``
  whose weight gradients are discarded), to show what ``NormPass`` saves;
* ``dp-hooks``: Opacus per-sample gradients materialised (``batch × parameters``), for comparison.

Time is the median step after ``--warmup`` steps; memory is the peak RSS of the process
(``ru_maxrss``), its growth during the steps, and (CPU) the peak of live tensors over three
profiled steps (torch.profiler's memory timeline: what a step needs, without the allocator's
caching; on CUDA the peak is ``torch.cuda.max_memory_allocated``). The table prints DP/plain ratios (goals: ≤ 2× time,
≤ 1.5× memory).

    python simulations/bench_dp_step.py
    python simulations/bench_dp_step.py --batch 256 --items 20000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("plain", "dp-ghost", "dp-ghost-opacus-pass", "dp-hooks")


def _worker(args: argparse.Namespace) -> dict:
    import warnings

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    from fedgraph.config import RunConfig
    from fedgraph.models import InterestModel
    from fedgraph.shop import ShopData
    from fedgraph.training.dp import NormPass, UserGradNormModule

    class PerUserLoss(torch.nn.Module):  # Opacus' loss wrapper wants a criterion with ``reduction``
        reduction = "mean"

        def forward(self, per_user: torch.Tensor, _target: object = None) -> torch.Tensor:
            return per_user if self.reduction == "none" else per_user.mean()

    from fedgraph.training.rows import RowSampler

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    cfg = RunConfig()
    n, items, per_user = args.users, args.items, 40
    indptr = np.arange(0, (n + 1) * per_user, per_user, dtype=np.int64)
    shop = ShopData(
        shop="bench",
        items=np.array([f"i{i}" for i in range(items)]),
        item_titles=np.array([""] * items),
        item_categories=np.array(["c"] * items),
        item_features=rng.standard_normal((items, 769)).astype(np.float32),
        users=np.array([f"u{u}" for u in range(n)]),
        indptr=indptr,
        item=rng.integers(0, items, n * per_user),
        attr=rng.random((n * per_user, 5)).astype(np.float32),
        test_indptr=np.zeros(n + 1, dtype=np.int64),
        test_item=np.zeros(0, dtype=np.int64),
    )
    t = cfg.train
    batch = (
        RowSampler(shop, history=t.history, positives=t.positives, negatives=t.negatives)
        .training_batch(np.arange(args.batch), np.random.default_rng(1))
        .to(device)
    )
    features = torch.from_numpy(shop.item_features).to(device)
    m = cfg.model
    model = InterestModel(
        769, dim=m.dim, hidden=m.hidden, temperature=m.temperature, num_local_items=items, content_dim=384 if m.content_score else 0
    ).to(device)
    base = torch.optim.Adam(model.parameters(), lr=t.lr)
    mode = args.worker
    if mode.startswith("dp-ghost"):
        gsm = UserGradNormModule(model, batch_first=True, loss_reduction="mean", max_grad_norm=1.0)
        opt = DPOptimizerFastGradientClipping(base, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=args.batch)
        crit = DPLossFastGradientClipping(gsm, opt, PerUserLoss(), loss_reduction="mean")
        norm_pass = NormPass(gsm)
    elif mode == "dp-hooks":
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        opt = DPOptimizer(base, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=args.batch)
    else:
        opt = base

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        per_user = model.recommendation_loss(batch, features)
        if mode == "dp-ghost":
            norm_pass.backward(per_user)
        elif mode == "dp-ghost-opacus-pass":
            norm_pass.outputs.clear()
            crit(per_user).backward()
        else:
            per_user.mean().backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() for p in model.parameters())
    return {
        "mode": mode,
        "median_step_ms": 1000 * statistics.median(times),
        "params": params,
        "peak_rss_mb": rss_peak / 1024,
        "rss_growth_mb": (rss_peak - rss_before) / 1024,
        "tensor_peak_mb": _tensor_peak_mb(step) if device.type == "cpu" else None,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }


def _tensor_peak_mb(step) -> float:
    """Peak bytes of live tensors over three steps, from torch.profiler's memory timeline (the
    allocator's own caching and fragmentation excluded: what the step needs, not what RSS shows)."""
    import tempfile
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        for _ in range(3):
            step()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(tmp, "timeline.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _times, sizes = json.load(f)
    return max(sum(row) for row in sizes) / 2**20 if sizes else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000, help="catalog size (the shop-private table has items × 65 weights)")
    parser.add_argument("--batch", type=int, default=32, help="users per step (fedgraph's default train.batch_size is 32)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    rows = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--worker", mode] + [
            f"--{k}={getattr(args, k)}" for k in ("users", "items", "batch", "steps", "warmup", "threads", "device")
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    plain = next((r for r in rows if r["mode"] == "plain"), rows[0])
    mem_key = "cuda_peak_mb" if args.device.startswith("cuda") else "peak_rss_mb"
    print(
        f"# DP step vs plain step, same batch of {args.batch} users; {args.items} items; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, device {args.device}, load {os.getloadavg()[0]:.1f}"
    )
    print("| mode | median step (ms) | × plain | peak memory (MB) | × plain | RSS growth in steps (MB) | tensor peak (MB) | × plain |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        tensors = r.get("tensor_peak_mb")
        tensor_cells = f"{tensors:.1f} | {tensors / plain['tensor_peak_mb']:.2f}" if tensors else "n/a | n/a"
        print(
            f"| {r['mode']} | {r['median_step_ms']:.1f} | {r['median_step_ms'] / plain['median_step_ms']:.2f} | "
            f"{r[mem_key]:.0f} | {r[mem_key] / plain[mem_key]:.2f} | {r['rss_growth_mb']:.0f} | {tensor_cells} |"
        )


if __name__ == "__main__":
    main()

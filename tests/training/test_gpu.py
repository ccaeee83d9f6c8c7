"""GPU paths: training (plain and DP), text embedding and graph building on CUDA agree with CPU.

Outside the default run (marker ``gpu``); run with ``python -m pytest -m gpu`` on a machine with
a CUDA device. Skipped where there is none.
"""

import numpy as np
import pytest
import torch

from fedgraph.evaluation import evaluate_model, evaluate_popularity
from fedgraph.models import InterestModel
from fedgraph.privacy import DPSettings
from fedgraph.training import TrainSettings, train_local

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("private", [False, True])
def test_training_on_cuda_learns_planted_interests(private, planted_shop):
    data = planted_shop()
    settings = TrainSettings(epochs=15, batch_size=16, lr=0.01, history=8, positives=2, negatives=16, seed=3)
    dp = DPSettings(noise_multiplier=0.5, max_grad_norm=1.0, sample_rate=16 / 120, delta=1e-5, noise_seed=1) if private else None
    torch.manual_seed(0)
    model = InterestModel(3, dim=8, hidden=16, num_local_items=data.num_items)
    before = evaluate_model(model, data, k=5, history=8, device="cuda")
    result = train_local(model, data, settings, device="cuda", dp=dp)
    assert next(model.parameters()).device.type == "cuda"
    after = evaluate_model(model, data, k=5, history=8, device="cuda")
    assert np.isfinite(result.loss) and result.steps > 0
    assert after["ndcg@5"] > before["ndcg@5"] + 0.05
    if not private:
        assert after["ndcg@5"] > 2 * evaluate_popularity(data, k=5)["ndcg@5"]


def test_text_embeddings_on_cuda_match_cpu(tmp_path):
    from fedgraph.text import TextEmbedder

    texts = ["Rustic oak cutting board", "Set of 4 ceramic mugs. Category: kitchen", "WHITE HANGING HEART T-LIGHT HOLDER"]
    cpu = TextEmbedder(device="cpu", cache_dir=None, progress=False).encode(texts)
    gpu = TextEmbedder(device="cuda", cache_dir=None, progress=False).encode(texts)
    assert gpu.shape == cpu.shape
    assert np.min(np.sum(cpu * gpu, axis=1)) > 0.999  # unit rows: cosine similarity


def test_interest_graph_on_cuda_matches_cpu():
    from fedgraph.graph.builder import build_interest_graph

    rng = np.random.default_rng(0)
    users, items = rng.standard_normal((50, 16)).astype(np.float32), rng.standard_normal((40, 16)).astype(np.float32)
    args = (
        "s",
        [f"u{i}" for i in range(50)],
        users,
        [f"i{i}" for i in range(40)],
        items,
        [f"t{i}" for i in range(40)],
        [f"c{i % 4}" for i in range(40)],
    )
    cpu = build_interest_graph(*args, device="cpu")
    gpu = build_interest_graph(*args, device="cuda")
    for edges in ("user_item", "item_item", "user_interest"):
        a, b = getattr(cpu, edges), getattr(gpu, edges)
        assert len(a) == len(b)
        names = a.dtype.names
        for name in names:
            if np.issubdtype(a.dtype[name], np.floating):
                assert np.allclose(a[name], b[name], atol=1e-4), (edges, name)
            else:
                assert np.array_equal(a[name], b[name]), (edges, name)

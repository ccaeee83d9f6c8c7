"""A complete local federation on loopback, for trying the deployment out, tests and benchmarks.

``make_demo(root)`` writes certificates, a small training config, ``server.toml``, one
``shop.toml`` + catalog + drop folder per shop (synthetic data), and returns each shop's events
so the caller can drop them in whatever pieces it likes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedgraph.deploy.certs import init_federation

FEDERATION_TOML = """\
# Training configuration shared by the server and every shop (a small, fast model).
[model]
dim = 16
hidden = 16

[train]
rounds = {rounds}
local_epochs = 1
batch_size = 32
history = 16
negatives = 16
device = "cpu"

[federation]
min_train_shops = {min_train_shops}
round_timeout_s = {round_timeout_s}
cpus_per_shop = 1

[evaluation]
history = 16

[privacy]
secure_aggregation = {secure_aggregation}
# The demo's shops send their validation figures to the server so that its log shows them; a real
# shop keeps the deployment default (false): Recall/NDCG on its customers is not DP (PRIVACY.md).
share_evaluation = true

[features]
cache_dir = "{cache_dir}"
"""

SERVER_TOML = """\
[server]
host = "127.0.0.1"
port = {port}
state_dir = "server-state"
certs = "certs"
run_config = "federation.toml"
shops = {shops}
"""

SHOP_TOML = """\
[shop]
name = "{shop}"
state_dir = "state"
run_config = "../federation.toml"

[server]
address = "127.0.0.1:{port}"
ca_cert = "../certs/ca.pem"
auth_key = "../certs/shops/{shop}/auth.key"

[source]
kind = "folder"
path = "drop"
catalog = "catalog.csv"
settle_s = {settle_s}

[daemon]
isolation = "{isolation}"
poll_s = {poll_s}
log_stderr = false
"""


@dataclass
class Demo:
    root: Path
    shops: list[str]
    events: dict[str, pd.DataFrame]

    @property
    def server_config(self) -> Path:
        return self.root / "server.toml"

    def shop_config(self, shop: str) -> Path:
        return self.root / shop / "shop.toml"

    def drop(self, shop: str) -> Path:
        return self.root / shop / "drop"

    def state(self, shop: str) -> Path:
        return self.root / shop / "state"


def write_events(events: pd.DataFrame, path: Path) -> Path:
    """Write events as the drop-folder CSV format, atomically (``.part`` name, then rename)."""
    tmp = path.with_name(path.name + ".part")
    frame = events[["event_id", "user", "item", "timestamp", "kind", "weight"]].copy()
    frame["timestamp"] = frame["timestamp"].astype(str)
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def make_demo(
    root: str | Path,
    *,
    shops: int = 3,
    extra_keys: tuple[str, ...] = (),
    users: tuple[int, int] = (30, 40),
    items: tuple[int, int] = (40, 50),
    port: int = 9443,
    rounds: int = 3,
    min_train_shops: int = 1,
    isolation: str = "warm",
    cache_dir: str | Path = "",
    poll_s: float = 0.2,
    settle_s: float = 0.2,
    seed: int = 0,
    round_timeout_s: float = 300.0,
    secure_aggregation: bool = True,
) -> Demo:
    from fedgraph.data.synthetic import generate_federation

    root = Path(root).resolve()
    fed = generate_federation(shops, seed=seed, users_per_shop=users, items_per_shop=items)
    names = sorted(fed.catalog["shop"].unique())
    init_federation(root / "certs", shops=[*names, *extra_keys])
    (root / "federation.toml").write_text(
        FEDERATION_TOML.format(
            rounds=rounds,
            min_train_shops=min_train_shops,
            round_timeout_s=float(round_timeout_s),
            cache_dir=cache_dir,
            secure_aggregation=str(bool(secure_aggregation)).lower(),
        )
    )
    (root / "server.toml").write_text(SERVER_TOML.format(port=port, shops="[" + ", ".join(f'"{s}"' for s in names) + "]"))
    events = {}
    for shop in [*names, *extra_keys]:
        base = root / shop
        (base / "drop").mkdir(parents=True, exist_ok=True)
        source = shop if shop in names else names[0]  # an extra key gets a copy of a real shop's catalog
        fed.catalog[fed.catalog["shop"] == source].assign(shop=shop).to_csv(base / "catalog.csv", index=False)
        (base / "shop.toml").write_text(SHOP_TOML.format(shop=shop, port=port, isolation=isolation, poll_s=poll_s, settle_s=settle_s))
        events[shop] = fed.events[fed.events["shop"] == source].reset_index(drop=True)
        if shop in names:  # the shop's history, ready to copy into drop/ (`cp events.csv drop/`)
            write_events(events[shop], base / "events.csv")
    return Demo(root, names, events)

"""Run configuration: typed sections with defaults, loaded from TOML, overridable by key.

A run is fully described by one :class:`RunConfig`. ``configs/*.toml`` files set any subset
of keys; everything else takes the defaults below. On the command line any key can be
overridden as ``section.key=value`` (value parsed as TOML, bare words as strings), e.g.
``train.rounds=3 data.max_users_per_shop=200 federation.strategy=fedprox``.

The resolved configuration is written to the run directory (``config.toml``) and is what
every process of the run (server, shop clients, reports) reads.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from fedgraph.atomic import atomic_write_text


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which key and why."""


@dataclass
class DataConfig:
    #: "online_retail" (bundled UCI data), "synthetic", or "files" (events + catalog paths).
    source: str = "online_retail"
    events: str = ""
    catalog: str = ""
    #: Online Retail partitioning: UK split into this many shops by customer hash.
    uk_shards: int = 4
    #: Online Retail: countries with fewer customers are grouped into the shop "other".
    min_customers: int = 20
    #: Keep at most this many users per shop (0 = all); deterministic under ``seed``.
    max_users_per_shop: int = 0
    #: Synthetic federation size.
    synthetic_shops: int = 20
    synthetic_users_per_shop: list[int] = field(default_factory=lambda: [20, 500])
    synthetic_items_per_shop: list[int] = field(default_factory=lambda: [50, 500])
    #: Events per synthetic user, log-uniform [low, high].
    synthetic_events_per_user: list[int] = field(default_factory=lambda: [5, 60])
    #: Planted search queries per synthetic user (Poisson mean; 0 = none).
    synthetic_searches_per_user: float = 0.0
    seed: int = 0
    #: Temporal hold-out: each user's last ``test_fraction`` of distinct items.
    test_fraction: float = 0.2
    min_user_items: int = 5


@dataclass
class FeatureConfig:
    #: Text encoder (:mod:`fedgraph.features.encoders`, one file each); every shop of a
    #: federation must use the same one (it is part of the model signature).
    text_encoder: str = "minilm"
    #: Text-similarity neighbours per item for the public item graph.
    neighbours: int = 10
    #: Propagation steps over that graph (0 disables the smoothed-text block).
    hops: int = 1
    text_batch_size: int = 256
    #: Embedding cache directory ("" = $FEDGRAPH_CACHE_DIR or ~/.cache/fedgraph).
    cache_dir: str = ""


@dataclass
class ModelConfig:
    dim: int = 64
    hidden: int = 64
    temperature: float = 0.1
    recency_halflife_days: float = 60.0
    #: Shop-private item corrections and biases (trained locally, never averaged or sent).
    local_items: bool = True
    #: Add s * cos(user's text profile, item's text embedding) / temperature to every score
    #: (s learned, starting at 1): training starts from the content baseline.
    content_score: bool = True
    #: Each user's latest search queries (events of kind "search") that join the history's items
    #: in the user's text profile, the content term's c_u (0 = searches are not used).
    search_queries: int = 16
    #: What each shop blends with the global model (weights chosen on its validation split):
    #: "federated_ease" (EASE on its own counts or on the federation's summed item
    #: co-occurrence counts, whichever validates better: the shops send their counts, not DP,
    #: so not with privacy.enabled or secure aggregation), "ease" (EASE on its own log only;
    #: never sent, not DP), "none" (the global model alone: fully DP under privacy.enabled), or
    #: "auto": federated_ease, or ease under privacy.enabled / secure aggregation.
    shop_private: str = "auto"

    def private_part(self, privacy: PrivacyConfig) -> str:
        """``shop_private`` with ``auto`` resolved against the privacy settings."""
        if self.shop_private != "auto":
            return self.shop_private
        return "ease" if privacy.enabled or privacy.secure_aggregation else "federated_ease"


@dataclass
class TrainConfig:
    rounds: int = 16
    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 0.0
    history: int = 32
    positives: int = 4
    negatives: int = 48
    seed: int = 0
    #: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"


@dataclass
class FederationConfig:
    #: "fedavg", "fedprox" or "fedadam".
    strategy: str = "fedavg"
    fraction_train: float = 1.0
    #: A round fails unless at least this many shops return an update.
    min_train_shops: int = 2
    proximal_mu: float = 0.01
    server_lr: float = 0.01
    round_timeout_s: float = 900.0
    #: Before the first round of a server process (a new run or a resume), wait at most this
    #: long for every enrolled shop to connect, then go on with those connected (at least
    #: min_train_shops; a round waits at most round_timeout_s for them).
    start_wait_s: float = 120.0
    #: Flower simulation backend resources per shop (fractions share a device).
    cpus_per_shop: int = 1
    gpus_per_shop: float = 0.0
    #: CPUs Ray may use in total (0 = all). Ignored with ray_address (the cluster has its own).
    total_cpus: int = 0
    #: Simulation engine only: run the shops on an existing Ray cluster ("host:port" of its
    #: head, as `ray start --head` prints, or "auto") instead of a Ray instance of its own. The
    #: run directory must be on a path every node of the cluster sees (checked before training).
    ray_address: str = ""
    #: Simulation engine only: ask at most this many shops at a time within a round (0 = all
    #: at once). Flower's in-memory link state scans every pending message on each shop's
    #: poll, so asking N shops at once costs O(N^2) server time; waves keep it O(N).
    #: Deployments always ask every shop at once.
    simulation_wave: int = 64
    #: Prepared shop data a simulation worker keeps in memory between messages, in MB per
    #: process. A round asks every shop once, so the worker keeps the first shops that fit and
    #: reads the others from disk at each ask (0 = keep none). Bounds a Ray worker's memory
    #: however many shops it serves (simulations/RESULTS.md, "Simulations past one machine").
    shop_cache_mb: float = 512.0
    #: How the server weighs the shops' updates: "users" (FedAvg by number of users: each shop
    #: sends its exact user count), "uniform" (every shop counts the same; a shop sends no
    #: counts, timings or training loss), or "auto": uniform under privacy.enabled or
    #: privacy.secure_aggregation (an exact count is outside the DP accounting, and SecAgg+ hides
    #: only the weights), users otherwise. See PRIVACY.md, "What leaves a shop".
    weighting: str = "auto"

    def weights(self, privacy: PrivacyConfig) -> str:
        """``weighting`` with ``auto`` resolved against the privacy settings."""
        if self.weighting != "auto":
            return self.weighting
        return "uniform" if privacy.enabled or privacy.secure_aggregation else "users"


#: The baselines a run computes by default (``evaluation.baselines``): every registered one
#: (:mod:`fedgraph.baselines`, one file each). Names are checked against the registry before a
#: run starts (:func:`fedgraph.baselines.check_names`), not here: the registry's files import the
#: library, which imports this module.
DEFAULT_BASELINES = ("popularity", "content", "itemknn", "ease", "ease_dp", "local", "pooled", "pooled_ease", "lightgcn_pooled")


@dataclass
class EvaluationConfig:
    k: int = 20
    #: History length used to embed a user at evaluation and graph time.
    history: int = 64
    baselines: list[str] = field(default_factory=lambda: list(DEFAULT_BASELINES))
    lightgcn_epochs: int = 8
    lightgcn_layers: int = 3
    lightgcn_dim: int = 64
    lightgcn_lr: float = 0.02
    lightgcn_batch_size: int = 32768


@dataclass
class GraphConfig:
    #: Where the interest graphs are kept: a backend of fedgraph.graph.stores ("sqlite": graph.sqlite).
    store: str = "sqlite"
    top_k_items: int = 20
    top_k_interests: int = 5
    top_k_neighbours: int = 10


@dataclass
class PrivacyConfig:
    """User-level DP-SGD in every shop, client-level DP and secure aggregation at the server (see PRIVACY.md)."""

    #: Train every shop with user-level DP-SGD (Opacus). The privacy unit is one customer's
    #: whole history in one shop.
    enabled: bool = False
    #: ε budget per shop for the whole run (train.rounds rounds of train.local_epochs passes).
    target_epsilon: float = 8.0
    #: δ per shop; 0 = min(1e-5, 0.1 / number of users in the shop).
    delta: float = 0.0
    #: Per-user gradient clipping norm C.
    max_grad_norm: float = 1.0
    #: Noise multiplier σ; 0 = the smallest σ that keeps the planned rounds within target_epsilon.
    noise_multiplier: float = 0.0
    #: Accountant that plans the noise and enforces the budget (:mod:`fedgraph.privacy.accountants`:
    #: "rdp", "prv", ...); every registered one is recorded in the ledger.
    accountant: str = "rdp"
    #: "ghost" (Opacus ghost clipping: no per-user gradient tensors) or "hooks".
    grad_sample_mode: str = "ghost"
    #: Seed DP noise and Poisson sampling from train.seed (reproducible simulations, predictable by
    #: whoever knows the seed); false = a CSPRNG keyed from the OS (fedgraph.privacy.csprng).
    #: Deployments default to false, and a shop daemon refuses DP training with true.
    deterministic_noise: bool = True
    #: The server asks every shop to evaluate each global model on its held-out data and sees
    #: the figures (not noised, not in the DP accounting). Simulations: true; deployments default
    #: to false, a shop refuses evaluate messages unless its own config sets true, and a shop
    #: under privacy.enabled refuses it altogether.
    share_evaluation: bool = True
    #: A DP shop sends its ε (both accountants) and δ to the server after each round. Both are
    #: functions of its customer count (σ, q and δ are planned from it), so deployments default
    #: to false: the shop then sends only its ledger length and the (public) target.
    report_epsilon: bool = True
    #: Client-level DP at the server: "off", "fixed" or "adaptive" (Flower's server-side clipping wrappers).
    client_dp: str = "off"
    client_noise_multiplier: float = 1.0
    client_clipping_norm: float = 1.0
    client_delta: float = 1e-5
    #: Secure aggregation with Flower's SecAgg+: the server sees only the sum of the shops' updates.
    secure_aggregation: bool = False
    #: SecAgg+ shares per shop (odd, >= 3) and the number of shares needed to reconstruct.
    secagg_num_shares: int = 3
    secagg_reconstruction_threshold: int = 2
    #: SecAgg+ quantisation range: updates are clipped to [-clipping_range, clipping_range].
    secagg_clipping_range: float = 8.0
    secagg_quantization_range: int = 4194304


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_toml())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "<dict>") -> RunConfig:
        config = cls()
        for section_name, values in raw.items():
            section = _section(config, section_name, source)
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{section_name}] must be a table of keys, got {values!r}")
            for key, value in values.items():
                _assign(section, section_name, key, value, source)
        config.validate(source)
        return config

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
        raw: dict[str, Any] = {}
        source = "defaults"
        if path is not None:
            path = Path(path)
            if not path.exists():
                raise ConfigError(f"config file {path} does not exist (see configs/ for examples)")
            if path.is_dir():
                raise ConfigError(f"config file {path} is a directory; give a TOML file, e.g. configs/default.toml")
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
            source = str(path)
        config = cls.from_dict(raw, source=source)
        for item in overrides or []:
            config.apply_override(item)
        config.validate("overrides" if overrides else source)
        return config

    def apply_override(self, item: str) -> None:
        """Apply one ``section.key=value`` override."""
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.rounds=3")
        dotted, text = item.split("=", 1)
        section_name, key = dotted.strip().split(".", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # bare word: a string
        _assign(_section(self, section_name, "override"), section_name, key, value, f"override {item!r}")

    # ------------------------------------------------------------------ checks
    def validate(self, source: str = "config") -> None:
        """Raise :class:`ConfigError` naming the key, the value, the allowed range and a fix for
        the first invalid value: every number against :data:`RANGES` (and finite), every choice
        against its allowed words, and the combinations that cannot run together."""
        from fedgraph.data.sources import SOURCES
        from fedgraph.features.encoders import ENCODERS
        from fedgraph.federation.strategies import STRATEGIES
        from fedgraph.graph.stores import STORES
        from fedgraph.privacy.accountants import ACCOUNTANTS

        for section in fields(self):
            values = getattr(self, section.name)
            for f in fields(values):
                message = _range_problem(f"{section.name}.{f.name}", getattr(values, f.name))
                if message:
                    raise ConfigError(f"{source}: {message}")
        checks = [
            (
                _DEVICE.fullmatch(self.train.device) is not None,
                f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.train.device!r} (auto picks CUDA when present)",
            ),
            (self.data.source in SOURCES, f"data.source must be one of {', '.join(sorted(SOURCES))}"),
            (
                self.data.source != "files" or (self.data.events and self.data.catalog),
                "data.source=files needs data.events and data.catalog paths",
            ),
            (0.0 < self.data.test_fraction < 1.0, "data.test_fraction must be between 0 and 1"),
            (self.train.rounds >= 1, "train.rounds must be >= 1"),
            (self.train.local_epochs >= 1, "train.local_epochs must be >= 1"),
            (self.train.batch_size >= 1, "train.batch_size must be >= 1"),
            (self.train.lr > 0, "train.lr must be > 0"),
            (
                min(self.train.history, self.train.positives, self.train.negatives) >= 1,
                "train.history, train.positives and train.negatives must be >= 1",
            ),
            (self.federation.strategy in STRATEGIES, f"federation.strategy must be one of {', '.join(sorted(STRATEGIES))}"),
            (0.0 < self.federation.fraction_train <= 1.0, "federation.fraction_train must be in (0, 1]"),
            (self.federation.min_train_shops >= 1, "federation.min_train_shops must be >= 1"),
            (self.federation.simulation_wave >= 0, "federation.simulation_wave must be >= 0 (0 = ask every shop at once)"),
            (
                _RAY_ADDRESS.fullmatch(self.federation.ray_address) is not None,
                f"federation.ray_address must be empty (a Ray instance of the run's own), 'auto' or HOST:PORT of a running "
                f"cluster's head (`ray start --head` prints it), got {self.federation.ray_address!r}",
            ),
            (self.federation.weighting in ("auto", "users", "uniform"), "federation.weighting must be auto, users or uniform"),
            (
                self.federation.weighting != "users" or not (self.privacy.enabled or self.privacy.secure_aggregation),
                "federation.weighting=users sends each shop's exact number of users, which is outside the DP accounting "
                "(privacy.enabled) and in the clear beside SecAgg+'s masked sum (privacy.secure_aggregation); use weighting=uniform or auto",
            ),
            (self.model.temperature > 0, "model.temperature must be > 0"),
            (
                self.model.shop_private in ("auto", "federated_ease", "ease", "none"),
                "model.shop_private must be auto, federated_ease, ease (the shop's own EASE only) or none (the global model alone)",
            ),
            (
                self.model.shop_private != "federated_ease" or not (self.privacy.enabled or self.privacy.secure_aggregation),
                "model.shop_private=federated_ease sends each shop's item co-occurrence counts, which are not differentially private "
                "and would be seen one shop at a time: with privacy.enabled or privacy.secure_aggregation use model.shop_private=ease or none",
            ),
            (self.evaluation.k >= 1, "evaluation.k must be >= 1"),
            (self.privacy.target_epsilon > 0, "privacy.target_epsilon must be > 0 (set privacy.enabled=false for no DP)"),
            (0.0 <= self.privacy.delta < 1.0, "privacy.delta must be in [0, 1); 0 picks min(1e-5, 0.1/users) per shop"),
            (self.privacy.max_grad_norm > 0, "privacy.max_grad_norm must be > 0"),
            (self.privacy.noise_multiplier >= 0, "privacy.noise_multiplier must be >= 0 (0 = derive from target_epsilon)"),
            (self.features.text_encoder in ENCODERS, f"features.text_encoder must be one of {', '.join(sorted(ENCODERS))}"),
            (self.graph.store in STORES, f"graph.store must be one of {', '.join(sorted(STORES))}"),
            (self.privacy.accountant in ACCOUNTANTS, f"privacy.accountant must be one of {', '.join(sorted(ACCOUNTANTS))}"),
            (self.privacy.grad_sample_mode in ("ghost", "hooks"), "privacy.grad_sample_mode must be ghost or hooks"),
            (self.privacy.client_dp in ("off", "fixed", "adaptive"), "privacy.client_dp must be off, fixed or adaptive"),
            (
                self.privacy.client_noise_multiplier >= 0 and self.privacy.client_clipping_norm > 0,
                "privacy.client_noise_multiplier must be >= 0 and privacy.client_clipping_norm > 0",
            ),
            (0.0 < self.privacy.client_delta < 1.0, "privacy.client_delta must be in (0, 1)"),
            (
                not (self.privacy.secure_aggregation and self.privacy.client_dp != "off"),
                "privacy.client_dp needs the server to clip each shop's update, which secure aggregation hides from it; use one of the two",
            ),
            (
                not (self.privacy.secure_aggregation and not getattr(STRATEGIES.get(self.federation.strategy), "secure_aggregation", True)),
                f"federation.strategy={self.federation.strategy} cannot run with secure aggregation: "
                f"{getattr(STRATEGIES.get(self.federation.strategy), 'why_not', '')}; use federation.strategy="
                f"{' or '.join(sorted(n for n, s in STRATEGIES.items() if s.secure_aggregation))}, or privacy.secure_aggregation=false",
            ),
            (
                self.privacy.secagg_num_shares >= 3 and self.privacy.secagg_num_shares % 2 == 1,
                "privacy.secagg_num_shares must be odd and >= 3 (Flower's SecAgg+ halts with an even number of shares)",
            ),
            (
                2 <= self.privacy.secagg_reconstruction_threshold < self.privacy.secagg_num_shares,
                "privacy.secagg_reconstruction_threshold must be at least 2 and below privacy.secagg_num_shares",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{source}: {message}")


#: Allowed ranges of the numeric keys: ``key -> (low, high, low_inclusive, note)``; ``None`` is
#: unbounded. Every float must also be finite. A key not listed here is checked in
#: :meth:`RunConfig.validate`'s combination checks (or takes any value of its type).
RANGES: dict[str, tuple[float | None, float | None, bool, str]] = {
    "data.uk_shards": (1, None, True, ""),
    "data.min_customers": (1, None, True, ""),
    "data.max_users_per_shop": (0, None, True, " (0 = all users)"),
    "data.synthetic_shops": (1, None, True, ""),
    "data.synthetic_searches_per_user": (0, None, True, " (0 = no searches)"),
    "data.min_user_items": (1, None, True, ""),
    "features.neighbours": (1, None, True, ""),
    "features.hops": (0, None, True, " (0 = no smoothed-text block)"),
    "features.text_batch_size": (1, None, True, ""),
    "model.dim": (1, None, True, ""),
    "model.search_queries": (0, None, True, " (0 = searches not used)"),
    "model.hidden": (1, None, True, ""),
    "model.recency_halflife_days": (0, None, False, ""),
    "train.weight_decay": (0, None, True, ""),
    "federation.proximal_mu": (0, None, True, ""),
    "federation.server_lr": (0, None, False, ""),
    "federation.round_timeout_s": (0, None, False, ""),
    "federation.start_wait_s": (0, None, True, " (0 = do not wait)"),
    "federation.cpus_per_shop": (1, None, True, ""),
    "federation.gpus_per_shop": (0, None, True, ""),
    "federation.total_cpus": (0, None, True, " (0 = all)"),
    "federation.shop_cache_mb": (0, None, True, " (0 = keep no shop data in memory)"),
    "evaluation.history": (1, None, True, ""),
    "evaluation.lightgcn_epochs": (1, None, True, ""),
    "evaluation.lightgcn_layers": (1, None, True, ""),
    "evaluation.lightgcn_dim": (1, None, True, ""),
    "evaluation.lightgcn_lr": (0, None, False, ""),
    "evaluation.lightgcn_batch_size": (1, None, True, ""),
    "graph.top_k_items": (1, None, True, ""),
    "graph.top_k_interests": (1, None, True, ""),
    "graph.top_k_neighbours": (1, None, True, ""),
    "privacy.secagg_clipping_range": (0, None, False, ""),
    "privacy.secagg_quantization_range": (2, None, True, ""),
}
#: The ``[low, high]`` pairs (synthetic shop sizes).
_PAIRS = ("data.synthetic_users_per_shop", "data.synthetic_items_per_shop", "data.synthetic_events_per_user")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_RAY_ADDRESS = re.compile(r"|auto|[A-Za-z0-9.\-]+:\d{1,5}")


def _range_problem(key: str, value: Any) -> str:
    """Why ``value`` is not allowed for ``key`` ("" when it is)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key} must be a finite number, got {value!r}"
    if key in _PAIRS:
        ok = len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and 1 <= value[0] <= value[1]
        return "" if ok else f"{key} must be [low, high] with 1 <= low <= high, got {value!r}"
    if key not in RANGES or isinstance(value, bool):
        return ""
    low, high, inclusive, note = RANGES[key]
    if low is not None and (value < low if inclusive else value <= low):
        return f"{key} must be {'>=' if inclusive else '>'} {low}{note}, got {value!r}"
    if high is not None and value > high:
        return f"{key} must be <= {high}{note}, got {value!r}"
    return ""


def check_device(name: str) -> None:
    """Refuse a ``train.device`` this machine does not have (before any work), with the fix.

    Raises:
        ConfigError: a CUDA (or MPS) device was asked for and is not present.
    """
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device={name}: this machine has no CUDA device (torch {torch.__version__}); "
                "use train.device=auto (CUDA when present, else CPU) or train.device=cpu"
            )
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device={name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); use one of them or train.device=auto"
            )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device=mps: this machine has no MPS device; use train.device=auto or cpu")


def _section(config: RunConfig, name: str, source: str) -> Any:
    names = [f.name for f in fields(config)]
    if name not in names:
        raise ConfigError(f"{source}: unknown section [{name}]; sections are {', '.join(names)}")
    return getattr(config, name)


def _assign(section: Any, section_name: str, key: str, value: Any, source: str) -> None:
    known = {f.name: f for f in fields(section)}
    if key not in known:
        raise ConfigError(f"{source}: unknown key {section_name}.{key}; keys of [{section_name}] are {', '.join(known)}")
    current = getattr(section, key)
    expected = type(current)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list and isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {section_name}.{key} must be {expected.__name__} (default {current!r}), got {value!r}")
    setattr(section, key, value)

"""Configuration files of a deployment: ``server.toml`` (the federation) and ``shop.toml`` (one shop).

Relative paths in either file are relative to the directory of the file itself, so a
configuration directory can be moved as a whole. See ``configs/deploy/`` for commented examples.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedgraph.config import ConfigError, RunConfig
from fedgraph.deploy.certs import CertError, check_shop_name


def _read(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{what} config {path} does not exist (see configs/deploy/ for examples)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _fill(obj: Any, raw: dict[str, Any], section: str, source: Path) -> None:
    known = {f.name: f for f in fields(obj)}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{source}: unknown key {section}.{key}; keys of [{section}] are {', '.join(known)}")
        current = getattr(obj, name)
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if current is not None and not isinstance(value, type(current)):
            raise ConfigError(f"{source}: {section}.{key} must be {type(current).__name__} (default {current!r}), got {value!r}")
        setattr(obj, name, value)


def _sections(raw: dict[str, Any], allowed: dict[str, Any], source: Path) -> None:
    for name, values in raw.items():
        if name not in allowed:
            raise ConfigError(f"{source}: unknown section [{name}]; sections are {', '.join(allowed)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table of keys")
        _fill(allowed[name], values, name, source)


#: What a deployment assumes wherever its training configuration (or an override) is silent:
#: secure aggregation on, DP noise from a CSPRNG, no evaluation figures and no ε/δ (functions of
#: the shop's size) sent to the server.
DEPLOYMENT_DEFAULTS = {
    "privacy.secure_aggregation": "true",
    "privacy.deterministic_noise": "false",
    "privacy.share_evaluation": "false",
    "privacy.report_epsilon": "false",
}


def deployment_run_config(path: Path | None, overrides: list[str] | None = None) -> RunConfig:
    """The training configuration as a deployment reads it: :data:`DEPLOYMENT_DEFAULTS` for every
    key the file and the overrides leave unset, then :func:`check_deployment`."""
    explicit = {o.split("=", 1)[0].strip() for o in overrides or []}
    if path is not None and path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError:
            raw = {}  # RunConfig.load says what is wrong with the file
        explicit |= {f"{section}.{key}" for section, table in raw.items() if isinstance(table, dict) for key in table}
    defaults = [f"{key}={value}" for key, value in DEPLOYMENT_DEFAULTS.items() if key not in explicit]
    config = RunConfig.load(path, [*defaults, *(overrides or [])])
    check_deployment(config, str(path) if path is not None else "the training configuration")
    return config


def check_deployment(config: RunConfig, source: str) -> None:
    """Refuse what a deployment must not do; both the server and every shop daemon check it.

    Raises:
        ConfigError: DP training with seeded (predictable) noise, or evaluation figures sent to
            the server from a shop under DP (they are not noised or accounted).
    """
    p = config.privacy
    if p.enabled and p.deterministic_noise:
        raise ConfigError(
            f"{source}: privacy.deterministic_noise = true seeds the DP noise and sampling from train.seed, which the server "
            "and every shop know, so anyone holding the configuration could regenerate the noise and the ε would be void. "
            "A deployment draws DP noise from a CSPRNG: remove the key or set privacy.deterministic_noise = false"
        )
    if p.enabled and p.share_evaluation:
        raise ConfigError(
            f"{source}: privacy.share_evaluation = true would send each shop's Recall/NDCG on its private held-out "
            "customers to the server every round, without noise and outside the DP accounting; set it to false "
            "(evaluate at the shop instead: `fedgraph client status` and the shop's graph)"
        )


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


# ----------------------------------------------------------------------------- shop


@dataclass
class ShopSection:
    #: The shop's name, as enrolled at the server (certs/shops/<name>).
    name: str = ""
    #: Where the daemon keeps its event log, graph, model and logs.
    state_dir: str = "state"
    #: The federation's training configuration (the same file the server uses).
    run_config: str = ""
    #: The privacy ledger's HMAC key, outside state_dir (default: ledger.key beside server.auth_key).
    ledger_key: str = ""


@dataclass
class ShopServerSection:
    #: SuperLink address host:port.
    address: str = "127.0.0.1:9443"
    #: CA certificate that signed the SuperLink's certificate.
    ca_cert: str = ""
    #: This shop's SuperNode authentication private key (OpenSSH, 0600).
    auth_key: str = ""
    #: Test setups only: no TLS (and therefore no authentication).
    insecure: bool = False


@dataclass
class SourceSection:
    #: "folder" (a drop folder of CSV/Parquet files) or "sqlite" (a table of an SQLite database).
    kind: str = "folder"
    #: folder: the drop folder; sqlite: the database file.
    path: str = "drop"
    #: sqlite: the table holding the events (columns event_id, user, item, timestamp, kind, weight).
    table: str = "events"
    #: The shop's catalog (CSV/Parquet with shop, item, title, description, category, price).
    catalog: str = ""
    #: folder: a file is picked up once its size and mtime have not changed for this long.
    settle_s: float = 0.5
    #: sqlite: rows read per batch.
    batch_rows: int = 5000


@dataclass
class DaemonSection:
    #: "warm": one long-lived ClientApp worker inside the daemon (torch imported once);
    #: "subprocess": Flower's default, a fresh ClientApp process per message.
    isolation: str = "warm"
    #: Seconds between ingestion passes.
    poll_s: float = 0.5
    #: Port of the SuperNode's local runtime API (0 = pick a free one).
    runtime_port: int = 0
    #: debug, info, warning or error.
    log_level: str = "info"
    #: Also write the JSON log lines to stderr.
    log_stderr: bool = True
    #: Seconds between SuperNode restarts after it exited (it reconnects by itself otherwise).
    restart_backoff_s: float = 2.0


@dataclass
class ShopConfig:
    path: Path
    shop: ShopSection = field(default_factory=ShopSection)
    server: ShopServerSection = field(default_factory=ShopServerSection)
    source: SourceSection = field(default_factory=SourceSection)
    daemon: DaemonSection = field(default_factory=DaemonSection)

    @classmethod
    def load(cls, path: str | Path) -> ShopConfig:
        path = Path(path).resolve()
        cfg = cls(path=path)
        _sections(_read(path, "shop"), {"shop": cfg.shop, "server": cfg.server, "source": cfg.source, "daemon": cfg.daemon}, path)
        cfg.validate()
        return cfg

    @property
    def base(self) -> Path:
        return self.path.parent

    def resolve(self, value: str) -> Path:
        return _resolve(self.base, value)

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.shop.state_dir)

    @property
    def ledger_key_path(self) -> Path:
        """Where the privacy ledger's HMAC key lives: ``shop.ledger_key``, else beside ``server.auth_key``,
        else ``<name>.ledger.key`` beside this file (test setups without authentication)."""
        if self.shop.ledger_key:
            return self.resolve(self.shop.ledger_key)
        if self.server.auth_key:
            return self.resolve(self.server.auth_key).parent / "ledger.key"
        return self.base / f"{self.shop.name}.ledger.key"

    def run_config(self) -> RunConfig:
        """The federation's training configuration as this shop reads it (:func:`deployment_run_config`):
        the shop, not the server, decides what it sends and under which protection."""
        return deployment_run_config(self.resolve(self.shop.run_config) if self.shop.run_config else None)

    def validate(self) -> None:
        src = self.path
        try:
            check_shop_name(self.shop.name)
        except CertError as exc:
            raise ConfigError(f"{src}: shop.name: {exc}") from None
        if self.source.kind not in ("folder", "sqlite"):
            raise ConfigError(f"{src}: source.kind must be 'folder' or 'sqlite', got {self.source.kind!r}")
        if not self.source.catalog:
            raise ConfigError(f"{src}: source.catalog is required: the shop's item catalog (CSV or Parquet)")
        key, state = self.ledger_key_path.resolve(), self.state_dir.resolve()
        if key == state or state in key.parents:
            raise ConfigError(
                f"{src}: shop.ledger_key {key} lies inside shop.state_dir {state}: the privacy ledger's key must be kept outside "
                "shop.state_dir (anyone who can write the state could otherwise rewrite or delete the ledger undetected); "
                "set shop.ledger_key to a path outside it, e.g. beside the shop's auth key"
            )
        if self.daemon.isolation not in ("warm", "subprocess"):
            raise ConfigError(f"{src}: daemon.isolation must be 'warm' or 'subprocess', got {self.daemon.isolation!r}")
        if ":" not in self.server.address:
            raise ConfigError(f"{src}: server.address must be host:port, e.g. 'fl.example.com:9443'")
        if not self.server.insecure and not (self.server.ca_cert and self.server.auth_key):
            raise ConfigError(
                f"{src}: server.ca_cert and server.auth_key are required (TLS and SuperNode authentication); "
                f"the server operator sends you ca.pem and shops/{self.shop.name}/auth.key from `fedgraph certs`"
            )


# ----------------------------------------------------------------------------- server


@dataclass
class ServerSection:
    #: Interface the SuperLink listens on ("0.0.0.0" for all; shops connect to host:port).
    host: str = "127.0.0.1"
    port: int = 9443
    #: Run directory: checkpoints, history, SuperLink database and logs.
    state_dir: str = "server-state"
    #: Directory made by `fedgraph certs init` (ca.pem, server.pem/.key, shops/<name>/auth.pub).
    certs: str = "certs"
    #: The federation's training configuration (send the same file to every shop).
    run_config: str = ""
    #: Enrolled shops: their public keys are certs/shops/<name>/auth.pub.
    shops: list = field(default_factory=list)
    #: Test setups only: no TLS and no SuperNode authentication.
    insecure: bool = False
    #: Stop the SuperLink once the training run finished (else keep serving until Ctrl-C).
    exit_after_run: bool = True
    log_level: str = "info"


@dataclass
class ServerConfig:
    path: Path
    server: ServerSection = field(default_factory=ServerSection)

    @classmethod
    def load(cls, path: str | Path) -> ServerConfig:
        path = Path(path).resolve()
        cfg = cls(path=path)
        _sections(_read(path, "server"), {"server": cfg.server}, path)
        cfg.validate()
        return cfg

    def resolve(self, value: str) -> Path:
        return _resolve(self.path.parent, value)

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.server.state_dir)

    @property
    def certs_dir(self) -> Path:
        return self.resolve(self.server.certs)

    def run_config(self, overrides: list[str] | None = None) -> RunConfig:
        """The training configuration (:func:`deployment_run_config`): SecAgg+ on, CSPRNG noise and
        no shared evaluation unless the configuration or an override says otherwise."""
        return deployment_run_config(self.resolve(self.server.run_config) if self.server.run_config else None, overrides)

    def validate(self) -> None:
        if not self.server.shops:
            raise ConfigError(f'{self.path}: server.shops must list the enrolled shops, e.g. shops = ["berlin", "paris"]')
        for shop in self.server.shops:
            try:
                check_shop_name(str(shop))
            except CertError as exc:
                raise ConfigError(f"{self.path}: server.shops: {exc}") from None
        if len(set(self.server.shops)) != len(self.server.shops):
            raise ConfigError(f"{self.path}: server.shops lists a shop twice")

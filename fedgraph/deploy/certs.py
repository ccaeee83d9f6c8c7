"""Certificates and keys for a fedgraph federation, made with the ``cryptography`` library.

Layout of a certificate directory (``fedgraph certs init DIR``)::

    DIR/ca.key                    CA private key (keep it offline after issuing)   0600
    DIR/ca.pem                    CA certificate: every shop gets a copy          0644
    DIR/server.key                the SuperLink's TLS private key                  0600
    DIR/server.pem                the SuperLink's certificate, signed by the CA    0644
    DIR/shops/<shop>/auth.key     a shop's SuperNode auth key (OpenSSH, EC P-384)  0600
    DIR/shops/<shop>/auth.pub     its public key: what the server enrols           0644

Two different trust mechanisms are at work: TLS (the shop checks it talks to *our*
SuperLink, via ``ca.pem``) and SuperNode authentication (the SuperLink only accepts a shop whose
public key was enrolled, the shop proving it holds the private key by signing its requests).

Private keys are written atomically (temporary file in the same directory, fsync, rename)
with mode 0600 from the moment they exist; nothing is ever overwritten without ``force``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SHOP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


class CertError(RuntimeError):
    """A certificate or key could not be created or read; the message says how to fix it."""


@dataclass(frozen=True)
class CertPaths:
    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    def shop_dir(self, shop: str) -> Path:
        return self.root / "shops" / shop

    def shop_key(self, shop: str) -> Path:
        return self.shop_dir(shop) / "auth.key"

    def shop_pub(self, shop: str) -> Path:
        return self.shop_dir(shop) / "auth.pub"

    def shops(self) -> list[str]:
        base = self.root / "shops"
        return sorted(p.name for p in base.iterdir() if (p / "auth.pub").exists()) if base.exists() else []


def check_shop_name(shop: str) -> str:
    if not SHOP_NAME.match(shop):
        raise CertError(
            f"shop name {shop!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
            f"starting with a letter or digit (e.g. 'berlin-01')"
        )
    return shop


def _write(path: Path, data: bytes, *, private: bool, force: bool) -> Path:
    """Write ``data`` atomically; private files are 0600 from creation (mkstemp) to the end."""
    if path.exists() and not force:
        raise CertError(f"{path} already exists; not overwriting it (pass --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_private(path: Path) -> ec.EllipticCurvePrivateKey:
    check_private_permissions(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read private key {path} ({exc}); re-create it with `fedgraph certs init`") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{path} is not an EC private key")
    return key


def check_private_permissions(path: Path) -> None:
    """Refuse a private key that others can read (as ssh does)."""
    if not path.exists():
        raise CertError(f"private key {path} does not exist; create it with `fedgraph certs ...` (see --help)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CertError(f"private key {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedgraph"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip() for h in hosts if h.strip()):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def create_ca(paths: CertPaths, *, name: str = "fedgraph federation CA", days: int = 3650, force: bool = False) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    _write(paths.ca_key, _private_pem(key), private=True, force=force)
    _write(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM), private=False, force=force)


def create_server_cert(paths: CertPaths, hosts: Iterable[str] = (), *, days: int = 825, force: bool = False) -> list[str]:
    """Issue the SuperLink's certificate with SANs for loopback plus ``hosts``; returns the SANs."""
    if not paths.ca_cert.exists():
        raise CertError(f"no CA in {paths.root}; create it first with `fedgraph certs init {paths.root}`")
    ca_key = _load_private(paths.ca_key)
    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    all_hosts = [*DEFAULT_HOSTS, *hosts]
    san = _san(all_hosts)
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(next((h for h in hosts), "localhost")))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write(paths.server_key, _private_pem(key), private=True, force=force)
    _write(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM), private=False, force=force)
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [str(v) for v in san.get_values_for_type(x509.IPAddress)]


def create_shop_keys(paths: CertPaths, shop: str, *, force: bool = False) -> tuple[Path, Path]:
    """A shop's SuperNode authentication key pair, in the OpenSSH format Flower reads."""
    check_shop_name(shop)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(paths.shop_key(shop), private, private=True, force=force)
    _write(paths.shop_pub(shop), public + f" fedgraph-shop-{shop}\n".encode(), private=False, force=force)
    return paths.shop_key(shop), paths.shop_pub(shop)


def init_federation(root: Path, *, hosts: Iterable[str] = (), shops: Iterable[str] = (), force: bool = False) -> CertPaths:
    """CA + server certificate + one key pair per shop, in one call."""
    paths = CertPaths(Path(root))
    shops = [check_shop_name(s) for s in shops]
    create_ca(paths, force=force)
    create_server_cert(paths, hosts, force=force)
    for shop in shops:
        create_shop_keys(paths, shop, force=force)
    return paths

"""The ``fedgraph certs``, ``fedgraph server`` and ``fedgraph client`` commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG_CERTS = """\
what it makes (cryptography library; private keys mode 0600, written atomically, never overwritten
without --force):
  DIR/ca.pem, DIR/ca.key            the federation's CA (keep ca.key offline once done)
  DIR/server.pem, DIR/server.key    the SuperLink's TLS certificate, SANs localhost, 127.0.0.1, ::1 + --host
  DIR/shops/NAME/auth.key, .pub     a shop's SuperNode authentication key pair (EC P-384, OpenSSH)

examples:
  fedgraph certs init certs --host fl.example.com --host 203.0.113.7 --shop berlin --shop paris
  fedgraph certs shop certs lyon          # a new shop later; add it to server.shops and restart the server

send each shop: certs/ca.pem and certs/shops/NAME/auth.key (privately); the server keeps the .pub files.
"""

EPILOG_SERVER = """\
what it does:
  starts a Flower SuperLink (TLS, SuperNode authentication: only the shops listed in server.shops,
  whose public keys it enrols; runtime dependency installation off), submits the fedgraph training
  run and prints a line per round. A checkpoint is written after every round: run the same command
  again after a crash or restart and training resumes after the last finished round.

examples:
  fedgraph server start --config configs/deploy/server.toml
  fedgraph server start --config configs/deploy/server.toml train.rounds=20   # override the training config
"""

EPILOG_CLIENT = """\
examples:
  fedgraph client start --config configs/deploy/shop.toml      # runs until Ctrl-C / SIGTERM
  fedgraph client status --config configs/deploy/shop.toml
  fedgraph client status --config configs/deploy/shop.toml --json
  fedgraph client forget --config configs/deploy/shop.toml --ids-file erasure.txt   # right to erasure

the daemon ingests new event files from its drop folder (or new rows of an SQLite table) exactly once,
keeps the shop's interest graph current between rounds and takes part in training rounds.
Logs: STATE_DIR/logs/daemon.jsonl (JSON lines, with levels).
"""


def add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    certs = sub.add_parser(
        "certs",
        help="create the CA, server certificate and shop key pairs",
        description="Create certificates and keys for a federation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_CERTS,
    )
    csub = certs.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = csub.add_parser("init", help="CA + server certificate (+ shop keys)")
    init.add_argument("dir", type=Path, help="certificate directory to create")
    init.add_argument("--host", action="append", default=[], help="server DNS name or IP the shops connect to (repeatable)")
    init.add_argument("--shop", action="append", default=[], help="create a key pair for this shop (repeatable)")
    init.add_argument("--force", action="store_true", help="replace existing files")
    shop = csub.add_parser("shop", help="a key pair for one more shop")
    shop.add_argument("dir", type=Path)
    shop.add_argument("name")
    shop.add_argument("--force", action="store_true")

    server = sub.add_parser(
        "server",
        help="run the federation server (SuperLink + training run)",
        description="Run the federation server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_SERVER,
    )
    ssub = server.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    start = ssub.add_parser(
        "start",
        help="start the SuperLink, enrol the shops, run training",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_SERVER,
    )
    start.add_argument("--config", "-c", type=Path, required=True, help="server.toml (see configs/deploy/server.toml)")
    start.add_argument("overrides", nargs="*", metavar="section.key=value", help="training configuration overrides")

    client = sub.add_parser(
        "client",
        help="run or inspect a shop daemon",
        description="Run or inspect a shop daemon.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_CLIENT,
    )
    csub2 = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    cstart = csub2.add_parser(
        "start",
        help="run the shop daemon (SuperNode + ClientApp + ingestion)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_CLIENT,
    )
    cstart.add_argument("--config", "-c", type=Path, required=True, help="shop.toml (see configs/deploy/shop.toml)")
    status = csub2.add_parser(
        "status",
        help="connection, last round, model version, events, graph, privacy budget",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_CLIENT,
    )
    status.add_argument("--config", "-c", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    forget = csub2.add_parser(
        "forget",
        help="erase customers (right to erasure): events, graph, training data, drop files, logs",
        description=(
            "Erase customers from the shop's state: their events, graph node and edges, training rows, their rows in "
            "processed drop files, and their id in logs. Older events of theirs are refused if delivered again. Stop "
            "the daemon first; then every file is searched for the id and any file still naming a customer is listed. "
            "Models already trained are not undone (PRIVACY.md)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_CLIENT,
    )
    forget.add_argument("--config", "-c", type=Path, required=True)
    forget.add_argument("users", nargs="*", metavar="USER", help="customer ids as in the events (prefer --ids-file: no shell history)")
    forget.add_argument("--ids-file", type=Path, help="a file of customer ids, one per line ('-' for standard input)")
    forget.add_argument("--json", action="store_true", help="machine-readable output")


def run_deploy_command(args: argparse.Namespace) -> int | None:
    """Run a deploy command; ``None`` if ``args`` is not one."""
    if args.command == "certs":
        from fedgraph.deploy import certs

        paths = certs.CertPaths(args.dir)
        if args.certs_command == "init":
            certs.init_federation(args.dir, hosts=args.host, shops=args.shop, force=args.force)
            print(f"CA and server certificate in {args.dir} (SANs: {', '.join([*certs.DEFAULT_HOSTS, *args.host])})")
        else:
            certs.create_shop_keys(paths, args.name, force=args.force)
        for shop in paths.shops():
            print(f"shop {shop}: private key {paths.shop_key(shop)} (send to the shop), public key {paths.shop_pub(shop)}")
        return 0
    if args.command == "server":
        from fedgraph.deploy.logs import setup_logging
        from fedgraph.deploy.server import start_server
        from fedgraph.deploy.settings import ServerConfig

        cfg = ServerConfig.load(args.config)
        log = setup_logging("fedgraph.server", cfg.state_dir / "logs" / "server.jsonl", cfg.server.log_level, stderr=False)
        try:
            return start_server(cfg, args.overrides, log, say=lambda line: print(line, flush=True))
        except KeyboardInterrupt:
            print(
                "\nstopped: finished rounds are checkpointed; run `fedgraph server start` with the same config to resume", file=sys.stderr
            )
            return 130
        except Exception as exc:  # the caller reports it on the terminal; monitoring reads server.jsonl
            log.error("server_failed", str(exc), error=type(exc).__name__)
            raise
    if args.command == "client":
        from fedgraph.deploy.settings import ShopConfig

        cfg = ShopConfig.load(args.config)
        if args.client_command == "start":
            from fedgraph.deploy.daemon import ShopDaemon

            return ShopDaemon(cfg).run()
        if args.client_command == "forget":
            return _forget(cfg, args)
        from fedgraph.deploy.status import collect, render

        info = collect(cfg)
        print(json.dumps(info, indent=2, default=str) if args.json else render(info))
        return 0
    return None


def _forget(cfg, args: argparse.Namespace) -> int:
    from fedgraph.deploy.forget import ForgetError, forget_customer, render

    users = list(args.users)
    if args.ids_file is not None:
        text = sys.stdin.read() if str(args.ids_file) == "-" else args.ids_file.read_text(encoding="utf-8")
        users += [line.strip() for line in text.splitlines() if line.strip()]
    if not users:
        raise ForgetError("fedgraph client forget: no customer given; name them (USER ...) or pass --ids-file FILE")
    reports = [forget_customer(cfg, user) for user in dict.fromkeys(users)]
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        print("\n".join(render(r) for r in reports))
    return 1 if any(r.left for r in reports) else 0


def known_errors() -> tuple[type[BaseException], ...]:
    from fedgraph.deploy.certs import CertError
    from fedgraph.deploy.forget import ForgetError
    from fedgraph.deploy.paths import StateDirBusy
    from fedgraph.deploy.server import ServerError

    return (CertError, ServerError, StateDirBusy, ForgetError)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)

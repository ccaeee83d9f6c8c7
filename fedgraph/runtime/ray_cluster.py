"""Running a simulation's shops on an existing Ray cluster (``federation.ray_address``).

Flower's simulation engine runs every shop's ClientApp in Ray actors; with
``federation.ray_address`` the actors live on an operator's cluster instead of a Ray instance
the run starts itself (:func:`fedgraph.runtime.simulation_engine.run_flower_simulation`). The
shops read and write the run directory (their prepared data, their private model parts,
their ledgers), so it must be on a path every node sees at the same place. :func:`check_cluster`
verifies that before training, and :func:`record_node` notes which node ran which shop in each
round (``RUN/ray_nodes/<shop>.json``), so an operator can see the work was spread.

Operator's steps (README, "Simulations on a Ray cluster"): ``ray start --head --port 6379`` on
one machine, ``ray start --address HEAD:6379`` on each other machine, the run directory on a
shared file system, then ``fedgraph simulate --out /shared/runs/x federation.ray_address=HEAD:6379``.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

from fedgraph.atomic import atomic_write_json


class ClusterError(RuntimeError):
    """The Ray cluster cannot be joined, or some node does not see the run directory."""


def _sees(path: str, token: str) -> dict[str, Any]:
    import socket

    import ray

    try:
        seen = Path(path).read_text() == token
    except OSError:
        seen = False
    return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "sees": seen}


def check_cluster(address: str, run_dir: str | Path, *, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Join the cluster at ``address`` and check, with one task pinned to every alive node, that
    each node reads a token file just written in ``run_dir``; then leave the cluster.

    Returns:
        One ``{"node", "host", "sees"}`` entry per node.

    Raises:
        ClusterError: the cluster cannot be joined, or a node does not see ``run_dir``.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    run_dir = Path(run_dir).resolve()
    token = secrets.token_hex(16)
    marker = run_dir / f".ray-visibility-{token[:8]}"
    marker.write_text(token)
    try:
        try:
            ray.init(address=address, logging_level="error", log_to_driver=False, include_dashboard=False)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError... all mean the same here
            raise ClusterError(
                f"cannot join the Ray cluster at federation.ray_address={address!r} ({type(exc).__name__}: {exc}); "
                "start it first (`ray start --head --port 6379` on the head, `ray start --address HEAD:6379` on the others) "
                "or leave federation.ray_address empty to run on this machine"
            ) from None
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            task = ray.remote(num_cpus=0)(_sees)
            refs = [
                task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker), token)
                for n in nodes
            ]
            found = ray.get(refs, timeout=timeout)
        finally:
            ray.shutdown()
    finally:
        marker.unlink(missing_ok=True)
    blind = [f"{f['host']} (node {f['node'][:8]})" for f in found if not f["sees"]]
    if blind:
        raise ClusterError(
            f"the run directory {run_dir} is not visible on {len(blind)} of {len(found)} Ray nodes: {', '.join(blind)}; "
            "put --out on a file system every node mounts at the same path (NFS, a shared volume) and run again"
        )
    return found


def record_node(run_dir: str | Path, shop: str, server_round: int) -> None:
    """Inside a Ray worker, note the node that ran ``shop`` in ``server_round``
    (``RUN/ray_nodes/<shop>.json``: round -> node id); elsewhere (no Ray) nothing."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    target = Path(run_dir) / "ray_nodes" / f"{shop}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    rounds = json.loads(target.read_text()) if target.exists() else {}
    rounds[str(int(server_round))] = ray.get_runtime_context().get_node_id()
    atomic_write_json(target, rounds)

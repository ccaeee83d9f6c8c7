"""Make idle shops' polls free in Flower's simulation engine (its in-memory link state).

Flower 1.42's simulation engine asks the link state for every virtual node's next message,
one node after another, every 0.1 s (``vce_api.add_messages_to_queue``), and
``InMemoryLinkState.get_message_ins`` answers each ask by scanning *every* stored message (with
an expiry and federation check per message). A sweep therefore costs nodes x messages: with
1,000 shops and a wave of 64 messages in flight, 64,000 checks every 0.1 s on the server's core,
while nearly all of those nodes have nothing waiting.

:func:`skip_idle_polls` wraps the two methods of that one state object (not the class): storing
a message marks its destination node as *pending*; a poll for a node that is not pending
returns ``[]`` at once; a pending node's poll is Flower's own ``get_message_ins``, and a poll
that finds nothing un-marks the node, unless a message for it was stored meanwhile (a per-node
counter, bumped after each store, decides). So every message Flower would deliver is delivered
by the same call on the next sweep it would have been, and a sweep costs one set look-up per
idle node. Expired messages are still cleaned by Flower's scan, which now runs on pending
nodes' polls only. Deployments (SuperLink over gRPC) are untouched.
"""

from __future__ import annotations

import threading
from typing import Any

#: Attribute set on a state whose polls are already wrapped.
_MARK = "_fedgraph_pending_nodes"


def skip_idle_polls(state: Any) -> bool:
    """Wrap ``state``'s ``store_message_ins``/``get_message_ins`` as the module says.

    Returns True if it wrapped them now, False if ``state`` is not Flower's in-memory link state
    or is wrapped already (so it is safe to call once per round).
    """
    try:
        from flwr.server.superlink.linkstate import InMemoryLinkState
    except ImportError:  # pragma: no cover - a Flower without it has no such scan either
        return False
    if not isinstance(state, InMemoryLinkState) or getattr(state, _MARK, None) is not None:
        return False
    pending: dict[int, int] = {}
    lock = threading.Lock()
    store_message_ins = state.store_message_ins
    get_message_ins = state.get_message_ins

    def store_and_mark(message: Any) -> Any:
        message_id = store_message_ins(message)
        # Marked after the store: a poll that missed the message saw an older counter (or none).
        with lock:
            node = message.metadata.dst_node_id
            pending[node] = pending.get(node, 0) + 1
        return message_id

    def get_if_pending(node_id: int, limit: int | None, *, run_id: int | None = None) -> list[Any]:
        # No lock for the look-up (one dict read, atomic in CPython; it ran for every idle node on
        # every sweep; profile: simulations/RESULTS.md, "Simulations past one machine"). A mark that lands just after
        # it is seen on the next sweep, as with the lock.
        seen = pending.get(node_id)
        if seen is None:
            return []
        found = get_message_ins(node_id, limit, run_id=run_id)
        if not found:
            with lock:
                if pending.get(node_id) == seen:
                    del pending[node_id]
        return found

    state.store_message_ins = store_and_mark
    state.get_message_ins = get_if_pending
    setattr(state, _MARK, pending)
    return True

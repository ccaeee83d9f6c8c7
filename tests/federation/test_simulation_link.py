"""Idle shops' polls in Flower's simulation engine (fedgraph.federation.simulation_link), on
Flower's real in-memory link state and grid."""

import secrets

import pytest
from flwr.app import Message, RecordDict
from flwr.common.constant import HEARTBEAT_INTERVAL_INF, NOOP_ACCOUNT_NAME, NOOP_FLWR_AID
from flwr.proto.task_pb2 import Task  # pylint: disable=no-name-in-module
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from fedgraph.federation.simulation_link import skip_idle_polls

RUN_ID, TASK_ID = 7, 11


@pytest.fixture
def link(monkeypatch):
    """A fresh in-memory link state with one run and six nodes, set up as Flower's simulation
    engine does, the grid the ServerApp would get, and the node ids."""
    monkeypatch.setattr(TaskIdentity, "_run_id", RUN_ID)
    monkeypatch.setattr(TaskIdentity, "_task_id", TASK_ID)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    run = Run.create_empty(run_id=RUN_ID)
    run.federation_id, run.primary_task_id = NOOP_FEDERATION_ID, TASK_ID
    state.run_ids[RUN_ID] = RunRecord(run=run)
    state.task_store[TASK_ID] = Task(task_id=TASK_ID, run_id=RUN_ID)
    nodes = []
    for _ in range(6):
        node = state.create_node(NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, secrets.token_bytes(32), heartbeat_interval=HEARTBEAT_INTERVAL_INF)
        state.acknowledge_node_heartbeat(node_id=node, heartbeat_interval=HEARTBEAT_INTERVAL_INF)
        nodes.append(node)
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return state, grid, nodes


def _count_scans(state) -> list[int]:
    """Count calls of Flower's own get_message_ins (the full scan) on this state."""
    calls = [0]
    scan = state.get_message_ins

    def counted(node_id, limit, *, run_id=None):
        calls[0] += 1
        return scan(node_id, limit, run_id=run_id)

    state.get_message_ins = counted
    return calls


def _sweep(state, nodes) -> list[tuple[int, str]]:
    """One pass of the simulation engine's poll loop: ask every node for one message."""
    return [(n, m.metadata.message_id) for n in nodes for m in state.get_message_ins(node_id=n, limit=1)]


def _push(grid, nodes, targets) -> list[str]:
    return list(grid.push_messages([Message(RecordDict(), nodes[i], "train") for i in targets]))


def test_same_deliveries_and_idle_nodes_cost_no_scan(link):
    state, grid, nodes = link
    scans = _count_scans(state)
    assert skip_idle_polls(state) is True
    assert skip_idle_polls(state) is False  # once per state
    assert skip_idle_polls(object()) is False  # anything but Flower's in-memory state is left alone
    assert _sweep(state, nodes) == [] and scans[0] == 0  # nothing stored: no scan at all
    ids = _push(grid, nodes, [1, 3, 3])
    delivered = []
    for _ in range(4):
        delivered += _sweep(state, nodes)
    # Flower's own rule, one message per node per sweep: node 1 and the first of node 3, then
    # node 3's second; then nothing.
    assert delivered == [(nodes[1], ids[0]), (nodes[3], ids[1]), (nodes[3], ids[2])]
    assert scans[0] == 5  # (1, 3), (1 finds none, 3), (3 finds none); never an idle node
    _sweep(state, nodes)
    assert scans[0] == 5
    later = _push(grid, nodes, [5])
    assert _sweep(state, nodes) == [(nodes[5], later[0])]


def test_a_message_stored_while_its_node_is_scanned_is_not_lost(link):
    """A poll finds nothing, and a message for the same node is stored before the poll
    un-marks the node: the node stays marked and the next sweep delivers it."""
    state, grid, nodes = link
    scan = state.get_message_ins
    late: list[str] = []

    def scan_then_store(node_id, limit, *, run_id=None):
        found = scan(node_id, limit, run_id=run_id)
        if not found and not late:
            late.extend(_push(grid, nodes, [2]))  # lands between the scan and the un-marking
        return found

    state.get_message_ins = scan_then_store
    skip_idle_polls(state)
    first = _push(grid, nodes, [2])
    assert _sweep(state, nodes) == [(nodes[2], first[0])]
    assert _sweep(state, nodes) == []  # this scan finds none; the late message is stored inside it
    assert late and _sweep(state, nodes) == [(nodes[2], late[0])]

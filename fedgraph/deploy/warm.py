"""A warm ClientApp: one long-lived worker that runs every message of a shop in-process.

Flower 1.42's SuperNode runs each ClientApp message in a fresh ``flwr-clientapp`` process
(isolation ``subprocess``: the SuperNode starts ``flower-superexec``, which polls the SuperNode's
runtime API for tasks and spawns one process per task). Every message therefore pays Python
start-up, ``import torch``, loading the shop's data and the model again (the cost:
simulations/RESULTS.md, 'Implementation measurements'). ``flwr.supercore.superexec.executor.warm_executor`` does not help here: it is an
idle placeholder for pre-started Kubernetes pods (agent, model and connector task types only).

With ``flower-supernode --isolation process`` the SuperNode starts no executor and waits for an
external one. :class:`WarmClientAppWorker` is that executor, as a thread of the shop daemon: it
asks the SuperNode for ``flwr-clientapp`` tasks (``AcquireTask``) and runs each one the way
``flwr-clientapp`` does (pull the message and context, call the ClientApp, push the reply and the
task output, heartbeat meanwhile), but in the already-warm daemon process, with the ClientApp
object imported from the installed fedgraph -- never code from the server's app bundle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_protobuf_utils import make_confirm_message_received_fn_protobuf, make_pull_object_fn_protobuf
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from fedgraph.deploy.logs import EventLogger

#: How long a task may wait for its message's objects in the local SuperNode. Once the SuperNode
#: has logged "Received successfully" they are all there (loopback), so this only bounds a task
#: whose message will never arrive: after a SuperLink restart the SuperNode creates a task for a
#: message of the old, no-longer-running run, then drops that message ("Run ID ... is not in
#: `RUNNING` status. Ignoring message <id>"); Flower's own default would wait two hours for it and
#: hold every later task (the new run's) behind it. The daemon passes the ids of such dropped
#: messages (``ignored_messages``), so the task is given up as soon as that line is seen; this
#: bound is the fallback.
MESSAGE_PULL_MAX_S = 30.0


class MessageDropped(RuntimeError):
    """The SuperNode dropped the message of this task (its run is no longer running)."""


#: The only app a shop daemon executes (the ``[tool.flwr.app] publisher`` and name of our FAB).
EXPECTED_FAB_ID = "fedgraph/fedgraph-app"


class WarmClientAppWorker(threading.Thread):
    def __init__(
        self,
        runtime_address: str,
        client_app: Any,
        log: EventLogger,
        *,
        poll_s: float = 0.1,
        on_task: Callable[[dict[str, Any]], None] | None = None,
        ignored_messages: set[str] | None = None,
    ):
        super().__init__(name="warm-clientapp", daemon=True)
        self.runtime_address = runtime_address
        self.client_app = client_app
        self.log = log
        self.poll_s = poll_s
        self.on_task = on_task
        self.stop_event = threading.Event()
        self.ignored_messages = ignored_messages if ignored_messages is not None else set()
        self.tasks_done = 0
        self._apps: dict[str, Any] = {}

    def stop(self) -> None:
        self.stop_event.set()

    def _client(self, *interceptors: Any, max_tries: int | None = None) -> RuntimeHttpClient:
        # polling (max_tries): fail fast and let run() back off, the SuperNode may be restarting
        retry = in_process_retry_invoker(self.stop_event, max_tries=max_tries)
        return RuntimeHttpClient.from_server_address(
            server_address=self.runtime_address,
            insecure=True,
            root_certificates=None,
            interceptors=list(interceptors),
            retry_invoker=retry,
        )

    def run(self) -> None:
        acquire = None
        while not self.stop_event.is_set():
            try:
                if acquire is None:
                    acquire = self._client(RuntimeVersionHttpInterceptor(component_name="SuperExec"), max_tries=2)
                res = acquire.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
                if res.HasField("task") and res.token:
                    self._run_task(res.token, res.task.task_id)
                    continue
            except Exception as exc:  # noqa: BLE001 - the SuperNode restarting, a network hiccup: retry
                self.log.debug("runtime_api_unreachable", f"SuperNode runtime API at {self.runtime_address}: {type(exc).__name__}: {exc}")
                if acquire is not None:
                    try:
                        acquire.close()
                    except Exception:  # noqa: BLE001
                        pass
                    acquire = None
                self.stop_event.wait(1.0)
                continue
            self.stop_event.wait(self.poll_s)
        if acquire is not None:
            acquire.close()

    def _app_for(self, fab: Any) -> Any:
        """The ClientApp the run names (``[tool.flwr.app.components] clientapp``), taken from the
        *installed* :mod:`fedgraph.apps.client_app` -- e.g. ``secagg_app`` for secure aggregation
        (``clients.client_app``, what older bundles name, re-exports the same objects).
        Any other reference is refused: the daemon never imports code from the app bundle."""
        key = getattr(fab, "hash_str", "")
        if key in self._apps:
            return self._apps[key]
        import importlib
        import io
        import tomllib
        import zipfile

        ref = "fedgraph.apps.client_app:app"
        try:
            with zipfile.ZipFile(io.BytesIO(fab.content)) as z:
                project = tomllib.loads(z.read("pyproject.toml").decode())
            ref = project["tool"]["flwr"]["app"]["components"]["clientapp"]
        except Exception:  # noqa: BLE001 - no readable bundle: the default app
            pass
        module, _, attr = ref.partition(":")
        if module not in ("fedgraph.apps.client_app", "clients.client_app") or not attr.isidentifier():
            raise PermissionError(
                f"refusing ClientApp {ref!r}: a shop daemon only runs ClientApps of its installed fedgraph.apps.client_app"
            )
        app = self.client_app if attr == "app" else getattr(importlib.import_module("fedgraph.apps.client_app"), attr)
        self._apps[key] = app
        return app

    def _run_task(self, token: str, task_id: int) -> None:
        started = time.perf_counter()
        client = self._client(RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token))
        heartbeat = HeartbeatSender(_task_heartbeat_fn(client))
        heartbeat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        info: dict[str, Any] = {"task_id": int(task_id)}
        try:
            message, context, run, fab = _pull_task_input(client, MESSAGE_PULL_MAX_S, self.ignored_messages)
            info.update(run_id=int(run.run_id), message_type=str(message.metadata.message_type))
            if run.fab_id and run.fab_id != EXPECTED_FAB_ID:
                raise PermissionError(f"refusing app {run.fab_id!r}: this shop daemon only runs {EXPECTED_FAB_ID!r}")
            reply = self._app_for(fab)(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # noqa: BLE001 - reported to the server as the reply's error
            reason = f"{type(exc).__name__}: {exc}"
            details = reason
            self.log.error("clientapp_failed", f"ClientApp task {task_id} failed: {reason}", exc_info=exc, **info)
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            except Exception as exc:  # noqa: BLE001
                self.log.error("reply_not_sent", f"could not send the reply of task {task_id}: {exc}", **info)
            try:
                push_task_output(client=client, context=context, sub_status=status, details=details)
            except Exception as exc:  # noqa: BLE001 - the SuperNode restarted under us: the task is gone with it
                self.log.warning("task_output_not_sent", f"could not report the end of task {task_id} to the SuperNode: {exc}", **info)
            heartbeat.stop()
            client.close()
        seconds = time.perf_counter() - started
        self.tasks_done += 1
        info.update(seconds=round(seconds, 3), status=str(status))
        self.log.info("clientapp_task", f"{info.get('message_type', 'task')} task {task_id} {status} in {seconds:.2f} s (warm)", **info)
        if self.on_task is not None:
            self.on_task(info)


_RETRYABLE_STATUS = {httpx.codes.BAD_GATEWAY, httpx.codes.SERVICE_UNAVAILABLE, httpx.codes.GATEWAY_TIMEOUT}
_TRANSPORT_ERRORS = (
    httpx.ConnectError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.PoolTimeout,
)

#: Longest a runtime-API call retries before the task is given up (the SuperNode is local).
RUNTIME_CALL_MAX_S = 60.0


def in_process_retry_invoker(stop: threading.Event, *, max_tries: int | None = None, max_time: float = RUNTIME_CALL_MAX_S) -> RetryInvoker:
    """Retries for runtime-API calls made inside the daemon process.

    Flower's ``make_simple_http_retry_invoker`` is written for a one-task ``flwr-clientapp``
    process: on HTTP 401 (the task's token is no longer valid, e.g. the SuperNode restarted) it
    sends SIGINT to its own process, and it retries for ever. In the daemon that SIGINT would stop
    the whole shop. Here a 401/403/404 gives up at once (the task fails and the worker goes on),
    transport errors and 502/503/504 retry for at most ``max_time`` seconds, and waiting stops as
    soon as the daemon stops."""

    def give_up(exc: Exception) -> bool:
        return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code not in _RETRYABLE_STATUS

    return RetryInvoker(
        lambda: exponential(max_delay=5),
        (*_TRANSPORT_ERRORS, httpx.HTTPStatusError),
        max_tries=max_tries,
        max_time=max_time,
        should_giveup=give_up,
        wait_function=stop.wait,
    )


def _task_heartbeat_fn(client: RuntimeHttpClient) -> Callable[[], bool]:
    """Flower's ``make_task_heartbeat_fn_http`` without its SIGINT to the whole process when the
    SuperNode no longer knows the task: here the heartbeat just stops mattering (the task's own
    calls fail and end it)."""
    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            client.SendTaskHeartbeat(request)
        except httpx.TransportError:
            return False  # retried by HeartbeatSender
        except httpx.HTTPStatusError as err:
            return err.response.status_code not in _RETRYABLE_STATUS
        except Exception:  # noqa: BLE001
            return True
        return True

    return beat


def _pull_task_input(
    client: RuntimeHttpClient, max_time: float, ignored: set[str] | frozenset[str] = frozenset()
) -> tuple[Message, Any, Any, Any]:
    """``flwr.supernode.runtime.run_clientapp.pull_task_input`` with a bound on the message pull
    (see :data:`MESSAGE_PULL_MAX_S`); raises ``ObjectPullError`` when the message never arrives and
    :class:`MessageDropped` as soon as its id is in ``ignored`` (the SuperNode dropped it)."""
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = res.task_id, res.run.run_id, res.context.node_id
    context, run, fab = context_from_proto(res.context), run_from_proto(res.run), fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("the SuperNode has no message for this task")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        _pull_unless_dropped(
            make_pull_object_fn_protobuf(client.PullObject, node, context.run_id), tree.object_id, context.run_id, ignored
        ),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message,
        max_time=max_time,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower does: a deflated message lacks its own id
    return message, context, run, fab


def _pull_unless_dropped(
    pull: Callable[[str], bytes], message_id: str, run_id: int, ignored: set[str] | frozenset[str]
) -> Callable[[str], bytes]:
    """``pull``, except that once ``message_id`` is in ``ignored`` (the SuperNode dropped that
    message) it raises :class:`MessageDropped`, which ends Flower's pull retries at once."""

    def pull_unless_dropped(object_id: str) -> bytes:
        if message_id in ignored:
            raise MessageDropped(f"the SuperNode dropped message {message_id}: its run {run_id} is no longer running")
        return pull(object_id)

    return pull_unless_dropped

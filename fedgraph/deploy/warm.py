"""A warm ClientApp: one long-lived worker that runs every message of a shop in-process.

Flower 1.42's SuperNode runs each ClientApp message in a fresh ``flwr-clientapp`` process
(isolation ``subprocess``: the SuperNode starts ``flower-superexec``, which polls the SuperNode's
runtime API for tasks and spawns one process per task). Every message therefore pays Python
start-up, ``import torch``, loading the shop's data and the model again -- about 6 s a round on
our machines. ``flwr.supercore.superexec.executor.warm_executor`` does not help here: it is an
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
from typing import Any, Callable

from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from fedgraph.deploy.logs import EventLogger

#: The only app a shop daemon executes (the ``[tool.flwr.app] publisher`` and name of our FAB).
EXPECTED_FAB_ID = "fedgraph/fedgraph-app"


class WarmClientAppWorker(threading.Thread):
    def __init__(self, runtime_address: str, client_app: Any, log: EventLogger, *, poll_s: float = 0.1,
                 on_task: Callable[[dict[str, Any]], None] | None = None):  # fmt: skip
        super().__init__(name="warm-clientapp", daemon=True)
        self.runtime_address = runtime_address
        self.client_app = client_app
        self.log = log
        self.poll_s = poll_s
        self.on_task = on_task
        self.stop_event = threading.Event()
        self.tasks_done = 0
        self._apps: dict[str, Any] = {}

    def stop(self) -> None:
        self.stop_event.set()

    def _client(self, *interceptors: Any, max_tries: int | None = None) -> RuntimeHttpClient:
        retry = make_simple_http_retry_invoker()
        if max_tries is not None:  # polling: fail fast and let run() back off (the SuperNode may be restarting)
            retry.max_tries = max_tries
        return RuntimeHttpClient.from_server_address(
            server_address=self.runtime_address, insecure=True, root_certificates=None,
            interceptors=list(interceptors), retry_invoker=retry,
        )  # fmt: skip

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
        *installed* ``clients.client_app`` module -- e.g. ``secagg_app`` for secure aggregation.
        Any other reference is refused: the daemon never imports code from the app bundle."""
        key = getattr(fab, "hash_str", "")
        if key in self._apps:
            return self._apps[key]
        import importlib
        import io
        import tomllib
        import zipfile

        ref = "clients.client_app:app"
        try:
            with zipfile.ZipFile(io.BytesIO(fab.content)) as z:
                project = tomllib.loads(z.read("pyproject.toml").decode())
            ref = project["tool"]["flwr"]["app"]["components"]["clientapp"]
        except Exception:  # noqa: BLE001 - no readable bundle: the default app
            pass
        module, _, attr = ref.partition(":")
        if module != "clients.client_app" or not attr.isidentifier():
            raise PermissionError(f"refusing ClientApp {ref!r}: a shop daemon only runs ClientApps of its installed clients.client_app")
        app = self.client_app if attr == "app" else getattr(importlib.import_module(module), attr)
        self._apps[key] = app
        return app

    def _run_task(self, token: str, task_id: int) -> None:
        started = time.perf_counter()
        client = self._client(RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token))
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        info: dict[str, Any] = {"task_id": int(task_id)}
        try:
            message, context, run, fab = pull_task_input(client)
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
            push_task_output(client=client, context=context, sub_status=status, details=details)
            heartbeat.stop()
            client.close()
        seconds = time.perf_counter() - started
        self.tasks_done += 1
        info.update(seconds=round(seconds, 3), status=str(status))
        self.log.info("clientapp_task", f"{info.get('message_type', 'task')} task {task_id} {status} in {seconds:.2f} s (warm)", **info)
        if self.on_task is not None:
            self.on_task(info)

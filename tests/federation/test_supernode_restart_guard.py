"""A SuperLink that restarts mid-run must not leave a school's SuperNode stuck (Flower 1.42).

The SuperNode creates a task and stores the message before pulling its objects; when the run
stops meanwhile it returned without finishing the task, and the ClientApp executor then waited
forever on that oldest pending task. `forget_unreceived_messages` finishes it as failed."""

from __future__ import annotations

import time
import types

from flwr.app import ConfigRecord, Message, Metadata, RecordDict
from flwr.common.constant import Status
from flwr.supercore.inflatable.inflatable_object import get_object_tree
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run, RunNotRunningException, RunStatus
from flwr.supernode import start_client_internal
from flwr.supernode.nodestate import NodeStateFactory

from federation.polling import forget_unreceived_messages


def _receive_while_the_run_stops(module: types.SimpleNamespace) -> tuple[object, int, int]:
    """Flower's own receive step, with a SuperLink whose run stops mid-pull; (returned run id,
    pending tasks, stored messages) afterwards."""
    state = NodeStateFactory(ObjectStoreFactory()).state()
    state.set_node_id(5)
    state.store_run(
        Run(run_id=7, fab_id="f", fab_version="1", fab_hash="h", override_config={},
            pending_at="", starting_at="", running_at="", finished_at="",
            status=RunStatus("running", "", ""), flwr_aid="", federation_id="",
            primary_task_id=None, bytes_sent=0, bytes_recv=0, clientapp_runtime=0.0)
    )  # fmt: skip
    metadata = Metadata(
        run_id=7, message_id="", src_node_id=1, dst_node_id=5, reply_to_message_id="",
        group_id="2", created_at=time.time(), ttl=3600, message_type="train",
    )  # fmt: skip
    message = Message(content=RecordDict({"config": ConfigRecord({"a": 1})}), metadata=metadata)
    message.metadata.__dict__["_message_id"] = message.object_id

    def pull_object(run_id: int, object_id: str) -> bytes:
        raise RunNotRunningException(f"run {run_id} stopped")

    returned = module._pull_and_store_message(
        state=state, object_store=state.object_store, node_config={},
        receive=lambda: (message, get_object_tree(message)), get_run=None, get_fab=None,
        pull_object=pull_object, confirm_message_received=None, trusted_entities=None,
    )  # fmt: skip
    pending = state.get_tasks(statuses=[Status.PENDING])
    return returned, len(pending), len(state.get_messages_legacy(is_reply=False))


def test_flower_alone_leaves_a_task_the_executor_would_wait_on_forever():
    module = types.SimpleNamespace(
        _pull_and_store_message=start_client_internal._pull_and_store_message
    )
    assert _receive_while_the_run_stops(module) == (None, 1, 1)


def test_the_guard_finishes_that_task_and_drops_its_message():
    module = types.SimpleNamespace(
        _pull_and_store_message=start_client_internal._pull_and_store_message
    )
    forget_unreceived_messages(module)
    forget_unreceived_messages(module)  # once is enough; twice changes nothing
    assert _receive_while_the_run_stops(module) == (None, 0, 0)

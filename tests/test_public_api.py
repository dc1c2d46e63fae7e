"""The public face (STYLE.md habit 1): ``actorflow.__all__`` is exactly the public names of the
package, each documented; every error class pickles with its message (habit 3)."""

from __future__ import annotations

import inspect
import pickle
import types

import pytest

import actorflow as af
from actorflow import _errors


def _public_names() -> set[str]:
    """Names of the package namespace without a leading underscore, submodules aside."""
    return {
        name for name, value in vars(af).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_is_exactly_the_public_names() -> None:
    exported = [name for name in af.__all__ if not name.startswith("_")]
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    assert set(exported) == _public_names()
    for name in af.__all__:
        assert hasattr(af, name), f"__all__ names {name!r}, which actorflow lacks"


def test_all_holds_the_names_api_md_promises() -> None:
    promised = {
        "init", "shutdown", "is_initialized", "run", "nodes", "cluster_resources",
        "available_resources", "remote", "put", "get", "wait", "as_completed", "cancel",
        "get_actor", "kill", "get_runtime_context", "get_gpu_ids", "supervise", "child",
        "ObjectRef", "ActorflowError", "TaskError", "ActorDiedError", "ActorUnavailableError",
        "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "GetTimeoutError",
        "TaskCancelledError", "InfeasibleError", "SerializationError", "AuthenticationError",
        "SupervisionError", "OwnerDiedError", "ObjectStoreFullError", "OutOfMemoryError",
        "placement_group", "remove_placement_group", "get_placement_group",
        "placement_group_table", "PlacementGroup", "PlacementGroupStrategy",
        "watch", "timeline", "memory_summary",
    }
    assert promised <= set(af.__all__), promised - set(af.__all__)


@pytest.mark.parametrize("name", sorted(n for n in af.__all__ if not n.startswith("__")))
def test_every_exported_object_has_a_docstring(name: str) -> None:
    obj = getattr(af, name)
    doc = obj.__doc__ if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    assert doc and doc.strip(), f"actorflow.{name} has no docstring"
    if inspect.isclass(obj):
        assert "__doc__" in vars(obj), f"actorflow.{name} only inherits its docstring"


ERROR_CLASSES = sorted(
    (obj for obj in (getattr(af, n) for n in af.__all__)
     if inspect.isclass(obj) and issubclass(obj, BaseException)),
    key=lambda cls: cls.__name__,
)


def _example(cls: type[BaseException]) -> BaseException:
    """An instance built the way actorflow builds one (constructors take the facts)."""
    cause = ValueError("the root cause")
    if cls is af.TaskError:
        return af.TaskError(cause, "Traceback (most recent call last):\nValueError: the root cause",
                            "task f (pid=7)")
    if cls is af.ActorDiedError:
        return af.ActorDiedError("Counter", "it crashed", cause)
    if cls is af.ActorUnavailableError:
        return af.ActorUnavailableError("Counter", "its process died")
    if cls is af.OwnerDiedError:
        return af.OwnerDiedError("obj-1", "driver pid=7")
    if cls is af.ObjectStoreFullError:
        return af.ObjectStoreFullError(3 << 30, 1 << 30, "node n1's object store")
    if cls is af.OutOfMemoryError:
        return af.OutOfMemoryError("f", "n1", 95 << 30, 100 << 30, 0.95)
    if cls is af.RuntimeEnvTooLargeError:
        return af.RuntimeEnvTooLargeError("/app", 200 << 20, 100 << 20)
    return cls(f"{cls.__name__} happened")


def test_every_error_derives_from_actorflow_error() -> None:
    assert af.ActorflowError in ERROR_CLASSES
    assert len(ERROR_CLASSES) >= 13
    for cls in ERROR_CLASSES:
        assert issubclass(cls, af.ActorflowError), cls
    assert issubclass(af.GetTimeoutError, TimeoutError)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_pickles_with_its_message(cls: type[BaseException]) -> None:
    err = _example(cls)
    for dumps in (pickle.dumps, lambda e: pickle.dumps(e, protocol=5)):
        back = pickle.loads(dumps(err))
        if cls is af.TaskError:  # comes back also as the cause's type (TaskError(ValueError))
            assert isinstance(back, af.TaskError) and isinstance(back, ValueError)
        else:
            assert type(back) is type(err)
        assert str(back) == str(err)
        assert back.args == err.args


def test_task_error_round_trip_keeps_the_original_type_and_traceback() -> None:
    err = _example(af.TaskError).as_instanceof_cause()  # type: ignore[attr-defined]
    assert isinstance(err, ValueError) and isinstance(err, af.TaskError)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ValueError) and isinstance(back, af.TaskError)
    assert str(back) == str(err)
    assert "Traceback (most recent call last)" in str(back) and "task f (pid=7)" in str(back)
    assert isinstance(back.cause, ValueError) and str(back.cause) == "the root cause"


def test_actor_died_error_round_trip_keeps_its_facts() -> None:
    back = pickle.loads(pickle.dumps(_example(af.ActorDiedError)))
    assert isinstance(back, af.ActorDiedError)
    assert (back.actor, back.reason) == ("Counter", "it crashed")
    assert isinstance(back.cause, ValueError) and str(back.cause) == "the root cause"


def test_error_tree_is_drawn_in_the_errors_docstring() -> None:
    doc = _errors.__doc__ or ""
    for cls in ERROR_CLASSES:
        assert cls.__name__ in doc, f"{cls.__name__} is missing from the tree in _errors.py"


def test_new_errors_carry_their_facts_as_fields_across_pickling() -> None:
    owner = pickle.loads(pickle.dumps(af.OwnerDiedError("obj-1", "driver pid=7")))
    assert isinstance(owner, af.ObjectLostError)
    assert (owner.object_id, owner.owner) == ("obj-1", "driver pid=7")
    full = pickle.loads(pickle.dumps(af.ObjectStoreFullError(3 << 30, 1 << 30, "shm")))
    assert (full.size, full.limit, full.where) == (3 << 30, 1 << 30, "shm")
    oom = pickle.loads(pickle.dumps(af.OutOfMemoryError("f", "n1", 95, 100, 0.95)))
    assert (oom.task, oom.node_id, oom.used, oom.total, oom.threshold) == ("f", "n1", 95, 100, 0.95)


def test_util_is_a_public_subpackage_imported_on_first_use() -> None:
    """``af.util`` (API.md §11) is reached as an attribute of the package, imported when first
    used; every name it exports is documented."""
    import subprocess
    import sys

    code = ("import sys, actorflow as af; assert 'actorflow.util' not in sys.modules; "
            "assert af.util.ActorPool and 'actorflow.util' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert "util" in dir(af)
    util = af.util
    assert isinstance(util, types.ModuleType) and util.__name__ == "actorflow.util"
    assert {"ActorPool", "Queue", "Full", "Empty"} <= set(util.__all__)
    for name in util.__all__:
        obj = getattr(util, name)
        assert "__doc__" in vars(obj) and (obj.__doc__ or "").strip(), f"af.util.{name}"

"""User options of tasks, actors and init, validated once (``extra="forbid"``): a typo or a
wrong type fails at decoration or ``.options()`` time with the valid choices.

An option record is a frozen slotted dataclass. The rules are pydantic models (the
``_*Model`` classes below), but pydantic is imported only when a value needs more than a
check: values of exactly the right type and range (what programs pass) are checked here, and
give the very record pydantic would give; anything else (a value pydantic would convert, like
``num_cpus="2"``, or a wrong one, for its message) goes through the models. So decorating
functions at import time does not import pydantic (the driver imports it later, with the
transport, while its node's zygote starts: see ``actorflow.cluster.bootstrap``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from actorflow.placement.strategies import parse_strategy

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["ActorOptions", "MethodOptions", "TaskOptions", "validate"]


@dataclass(frozen=True, slots=True)
class _Options:
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: float | None = None
    resources: dict[str, float] | None = None
    name: str | None = None
    scheduling_strategy: Any = None
    runtime_env: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TaskOptions(_Options):
    """Options of a remote function (``@af.remote(...)`` / ``.options(...)``)."""

    num_returns: int = 1
    max_retries: int = 3
    retry_exceptions: bool | list[type[BaseException]] | tuple[type[BaseException], ...] = False
    #: a generator task pauses while this many of its results are not yet taken (None: never)
    generator_backpressure: int | None = None


@dataclass(frozen=True, slots=True)
class ActorOptions(_Options):
    """Options of an actor class."""

    max_restarts: int = 0
    max_task_retries: int = 0
    max_concurrency: int | None = None
    namespace: str | None = None
    lifetime: Literal["detached"] | None = None
    get_if_exists: bool = False


@dataclass(frozen=True, slots=True)
class MethodOptions:
    """Options of one actor method call (``handle.method.options(...)``)."""

    num_returns: int = 1
    name: str | None = None
    generator_backpressure: int | None = None


Record = TaskOptions | ActorOptions | MethodOptions


# -- the quick check: exact types and ranges -------------------------------------------------

class _Slow(Exception):
    """This value needs pydantic (to be converted, or for its error message)."""


def _amount(value: Any) -> float | None:  # float | None, >= 0
    if value is None:
        return None
    if type(value) not in (int, float) or not value >= 0:
        raise _Slow
    return float(value)


def _gpus(value: Any) -> float | None:
    amount = _amount(value)
    if amount is not None and amount > 1 and amount != int(amount):
        raise _Slow
    return amount


def _resources(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _Slow
    out = {}
    for key, amount in value.items():
        if type(key) is not str or type(amount) not in (int, float) or not amount >= 0:
            raise _Slow
        out[key] = float(amount)
    return out


def _str(value: Any) -> str | None:
    if value is not None and type(value) is not str:
        raise _Slow
    return value


def _strategy(value: Any) -> Any:
    if value is None:
        return None
    try:
        return parse_strategy(value)
    except Exception:
        raise _Slow from None


def _int(least: int, *, optional: bool = False) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if optional and value is None:
            return None
        if type(value) is not int or value < least:
            raise _Slow
        return value

    return check


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Slow
    return value


def _retry_exceptions(value: Any) -> bool:
    return _bool(value)  # a list or tuple of exception types: pydantic copies and checks it


def _lifetime(value: Any) -> str | None:
    if value is not None and value != "detached":
        raise _Slow
    return value  # type: ignore[no-any-return]


def _runtime_env(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    from actorflow.cluster.runtime_env import normalize

    return normalize(value)  # a TypeError names what is wrong


_COMMON: dict[str, Callable[[Any], Any]] = {
    "num_cpus": _amount, "num_gpus": _gpus, "memory": _amount, "resources": _resources,
    "name": _str, "scheduling_strategy": _strategy, "runtime_env": _runtime_env,
}
_CHECKS: dict[type, dict[str, Callable[[Any], Any]]] = {
    TaskOptions: {**_COMMON, "num_returns": _int(1), "max_retries": _int(-1),
                  "retry_exceptions": _retry_exceptions,
                  "generator_backpressure": _int(1, optional=True)},
    ActorOptions: {**_COMMON, "max_restarts": _int(-1), "max_task_retries": _int(-1),
                   "max_concurrency": _int(1, optional=True), "namespace": _str,
                   "lifetime": _lifetime, "get_if_exists": _bool},
    MethodOptions: {"num_returns": _int(1), "name": _str,
                    "generator_backpressure": _int(1, optional=True)},
}


# -- the rules, as pydantic models (imported on first need) ----------------------------------

@functools.cache
def _models() -> dict[type, type[BaseModel]]:
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    class _OptionsModel(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

        num_cpus: float | None = Field(default=None, ge=0)
        num_gpus: float | None = Field(default=None, ge=0)
        memory: float | None = Field(default=None, ge=0)
        resources: dict[str, float] | None = None
        name: str | None = None
        scheduling_strategy: Any = None
        runtime_env: dict[str, Any] | None = None

        @field_validator("runtime_env")
        @classmethod
        def _check_runtime_env(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
            return _runtime_env(value)

        @field_validator("resources")
        @classmethod
        def _check_resources(cls, value: dict[str, float] | None) -> dict[str, float] | None:
            if value is not None:
                for key, amount in value.items():
                    if amount < 0:
                        raise ValueError(f"resource {key!r} must be >= 0, got {amount}")
            return value

        @field_validator("scheduling_strategy")
        @classmethod
        def _check_strategy(cls, value: Any) -> Any:
            return parse_strategy(value) if value is not None else None

        @field_validator("num_gpus")
        @classmethod
        def _check_gpus(cls, value: float | None) -> float | None:
            if value is not None and value > 1 and value != int(value):
                raise ValueError(f"num_gpus above 1 must be a whole number, got {value}")
            return value

    class _TaskModel(_OptionsModel):
        num_returns: int = Field(default=1, ge=1)
        max_retries: int = Field(default=3, ge=-1)
        retry_exceptions: (bool | list[type[BaseException]]
                           | tuple[type[BaseException], ...]) = False
        generator_backpressure: int | None = Field(default=None, ge=1)

    class _ActorModel(_OptionsModel):
        max_restarts: int = Field(default=0, ge=-1)
        max_task_retries: int = Field(default=0, ge=-1)
        max_concurrency: int | None = Field(default=None, ge=1)
        namespace: str | None = None
        lifetime: Literal["detached"] | None = None
        get_if_exists: bool = False

    class _MethodModel(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        num_returns: int = Field(default=1, ge=1)
        name: str | None = None
        generator_backpressure: int | None = Field(default=None, ge=1)

    return {TaskOptions: _TaskModel, ActorOptions: _ActorModel, MethodOptions: _MethodModel}


def _slow(model: type[Record], data: dict[str, Any], what: str) -> Any:
    from pydantic import ValidationError

    rules = _models()[model]
    try:
        checked = rules(**data)
    except ValidationError as exc:
        valid = ", ".join(sorted(rules.model_fields))
        raise TypeError(f"invalid options for {what}: {exc.errors()[0]['loc'][0]}: "
                        f"{exc.errors()[0]['msg']}. Valid options: {valid}") from None
    return model(**{name: getattr(checked, name) for name in rules.model_fields})


def validate(model: type[Record], base: Record | None, what: str, **updates: Any) -> Any:
    """``model`` built from ``base`` plus ``updates``; a clear TypeError on a bad option."""
    data = ({f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
            if base is not None else {})
    data.update(updates)
    checks = _CHECKS[model]
    try:
        return model(**{key: checks[key](value) for key, value in data.items()})
    except (_Slow, KeyError):
        return _slow(model, data, what)


"""User options of tasks, actors and init, validated once (pydantic, ``extra="forbid"``):
a typo or a wrong type fails at decoration or ``.options()`` time with the valid choices."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from actorflow.placement.strategies import parse_strategy

__all__ = ["ActorOptions", "TaskOptions", "validate"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory: float | None = Field(default=None, ge=0)
    resources: dict[str, float] | None = None
    name: str | None = None
    scheduling_strategy: Any = None

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


class TaskOptions(_Options):
    """Options of a remote function (``@af.remote(...)`` / ``.options(...)``)."""

    num_returns: int = Field(default=1, ge=1)
    max_retries: int = Field(default=3, ge=-1)
    retry_exceptions: bool | list[type[BaseException]] | tuple[type[BaseException], ...] = False


class ActorOptions(_Options):
    """Options of an actor class."""

    max_restarts: int = Field(default=0, ge=-1)
    max_task_retries: int = Field(default=0, ge=-1)
    max_concurrency: int | None = Field(default=None, ge=1)
    namespace: str | None = None
    lifetime: Literal["detached"] | None = None
    get_if_exists: bool = False


class MethodOptions(BaseModel):
    """Options of one actor method call (``handle.method.options(...)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_returns: int = Field(default=1, ge=1)
    name: str | None = None


def validate(model: type[BaseModel], base: BaseModel | None, what: str, **updates: Any
             ) -> Any:
    """``model`` built from ``base`` plus ``updates``; a clear TypeError on a bad option."""
    data = base.model_dump(exclude_unset=True) if base is not None else {}
    data.update(updates)
    try:
        return model(**data)
    except ValidationError as exc:
        valid = ", ".join(sorted(model.model_fields))
        raise TypeError(f"invalid options for {what}: {exc.errors()[0]['loc'][0]}: "
                        f"{exc.errors()[0]['msg']}. Valid options: {valid}") from None

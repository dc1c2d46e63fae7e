"""Values to bytes and back: cloudpickle protocol 5 with out-of-band buffers.

A serialized value is ``meta`` (the pickle stream) plus ``buffers`` (the raw memory of numpy
arrays and other protocol-5 buffers, not copied into the stream). Small values travel inline
(``meta`` and the buffers joined); large ones are written once into a shared-memory segment and
read back zero-copy (see :mod:`actorflow.objects.shm`).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from actorflow._errors import SerializationError

__all__ = [
    "INLINE_LIMIT",
    "Serialized",
    "deserialize",
    "dumps",
    "is_plain",
    "loads",
    "loads_read_only",
    "serialize",
]

#: Values whose serialized size is below this travel inline in messages; larger ones go to the
#: node's shared-memory store.
INLINE_LIMIT = 100 * 1024


@dataclass(frozen=True, slots=True)
class Serialized:
    """A value as pickle stream + out-of-band buffers."""

    meta: bytes
    buffers: tuple[memoryview, ...] = ()

    @property
    def nbytes(self) -> int:
        return len(self.meta) + sum(b.nbytes for b in self.buffers)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__module__}.{type(value).__qualname__} {text}"


_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
_SCALARS = {int, float, str, bool, type(None)}


def plain_type(cls: type[Any]) -> type[Any]:
    """Count instances of ``cls`` (a class of actorflow's own, importable wherever values
    are read, whose instances pickle as a reference to it plus plain fields) as plain: the C
    pickler writes them exactly as cloudpickle would. A class decorator."""
    _SCALARS.add(cls)
    return cls


def is_plain(value: Any, depth: int = 0) -> bool:
    """Builtin scalars, and short tuples/lists/dicts of them: values that the C pickler
    writes exactly as cloudpickle does (nothing of the user's can be pickled by reference).
    (Plain loops, no generators: this runs on every call's arguments.)"""
    t = type(value)
    if t in _SCALARS:
        return True
    if t is bytes:
        return len(value) < 4096
    if (t is not tuple and t is not list and t is not dict) or depth >= 2 or len(value) > 16:
        return False
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _SCALARS and not is_plain(v, depth + 1)):
                return False
        return True
    for v in value:  # noqa: SIM110  # a generator in all() costs more than the check
        if type(v) not in _SCALARS and not is_plain(v, depth + 1):
            return False
    return True


def serialize(value: Any, what: str = "value") -> Serialized:
    """Pickle ``value`` keeping large buffers out of band. Raises SerializationError naming
    the object and the cause."""
    if is_plain(value):  # the common small case: the C pickler, no buffers to look for
        return Serialized(pickle.dumps(value, protocol=5))
    buffers: list[memoryview] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        view = buf.raw()
        if view.nbytes < 4096:
            return True  # small buffers are cheaper in-band
        buffers.append(view)
        return False

    try:
        meta = cloudpickle.dumps(value, protocol=5, buffer_callback=keep)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {what} {_describe(value)}: {type(exc).__name__}: {exc}. "
            "Pass picklable data (or create the object inside the task or actor)."
        ) from exc
    return Serialized(meta, tuple(buffers))


def deserialize(meta: bytes | memoryview, buffers: Sequence[Any] = ()) -> Any:
    """Inverse of :func:`serialize`; buffers may be views into shared memory (zero-copy)."""
    return pickle.loads(meta, buffers=buffers)


def dumps(value: Any, what: str = "value") -> bytes:
    """Serialize to one bytes object (buffers joined in-band)."""
    if is_plain(value):
        return pickle.dumps(value, protocol=5)
    try:
        data: bytes = cloudpickle.dumps(value, protocol=5)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {what} {_describe(value)}: {type(exc).__name__}: {exc}. "
            "Pass picklable data (or create the object inside the task or actor)."
        ) from exc
    return data


def loads(data: bytes | memoryview) -> Any:
    return pickle.loads(data)


#: numpy's functions that pickles call to make an array: from a buffer (protocol 5, contiguous
#: arrays), or empty and then filled by ``__setstate__`` (other layouts, object arrays). numpy
#: 1.x and 2.x name their modules differently.
_ARRAY_MAKERS = frozenset({
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
})


class _ReadOnlyArrays(pickle.Unpickler):
    """An unpickler that notes every numpy array it makes, to make them read-only once they
    are complete (an array made empty is filled by a later opcode)."""

    def __init__(self, data: bytes | memoryview, buffers: Sequence[Any]) -> None:
        super().__init__(io.BytesIO(data), buffers=buffers)
        self.arrays: list[Any] = []

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if (module, name) not in _ARRAY_MAKERS:
            return found
        arrays = self.arrays

        def make(*args: Any) -> Any:
            array = found(*args)
            arrays.append(array)
            return array

        return make


def loads_read_only(meta: bytes | memoryview, buffers: Sequence[Any] = ()) -> Any:
    """:func:`deserialize`, with every numpy array in the value read-only, however it came:
    a view of shared memory or of a buffer sent out of band, or rebuilt from bytes inside the
    stream. A call's arguments read this way behave alike at every size (API.md §3). No copy:
    only the arrays' flags change. A stream that names nothing of numpy's (checked when it is
    ``bytes``: the common small case) is read as it is."""
    if type(meta) is bytes and b"numpy" not in meta:
        return pickle.loads(meta, buffers=buffers) if buffers else pickle.loads(meta)
    unpickler = _ReadOnlyArrays(meta, buffers)
    value = unpickler.load()
    for array in unpickler.arrays:
        try:
            array.flags.writeable = False
        except (AttributeError, ValueError):  # not an array after all; or it has no flags
            pass
    return value

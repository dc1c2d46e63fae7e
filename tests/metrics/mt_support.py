"""Helpers of the metrics tests: polling with a deadline, reading Prometheus text with
prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

T = TypeVar("T")

#: The longest any wait in these tests lasts.
WAIT = 30.0


async def until(check: Callable[[], Awaitable[T | None]], what: str,
                timeout: float = WAIT) -> T:
    """Poll ``check`` until it returns something other than None (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def samples(text: bytes | str) -> dict[str, list[Sample]]:
    """Every sample of an exposition, by sample name (``x_total``, ``h_bucket``...)."""
    if isinstance(text, bytes):
        text = text.decode()
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def kinds(text: bytes | str) -> dict[str, str]:
    """Each family's type, by family name."""
    if isinstance(text, bytes):
        text = text.decode()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def value(found: dict[str, list[Sample]], name: str,
          labels: Mapping[str, str] | None = None) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (None if absent)."""
    for sample in found.get(name, ()):
        if all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
            return sample.value
    return None

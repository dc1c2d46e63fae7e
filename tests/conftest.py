"""Suite-wide guards.

- ``asyncio_hygiene`` (autouse) fails a test when asyncio reports, during that test, a task
  destroyed while pending or a future exception never retrieved. asyncio reports both through
  its loop exception handler, which logs to the ``asyncio`` logger; we listen there (so loops in
  threads count too) and force a collection at teardown so that leaks surface in the test that
  made them.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

_BAD = ("Task was destroyed but it is pending", "exception was never retrieved")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if any(bad in text for bad in _BAD):
            self.found.append(text)


@pytest.fixture(autouse=True)
def asyncio_hygiene() -> Iterator[None]:
    collector = _Collector()
    log = logging.getLogger("asyncio")
    log.addHandler(collector)
    try:
        yield
        gc.collect()
    finally:
        log.removeHandler(collector)
    if collector.found:
        pytest.fail("asyncio reported leaked work:\n" + "\n".join(collector.found[:5]))

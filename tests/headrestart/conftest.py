"""The head-restart tests use the multi-node tests' helpers: clusters of real processes started
with ``actorflow start`` (tests/multinode/mn_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

_MULTINODE = str(Path(__file__).resolve().parent.parent / "multinode")
if _MULTINODE not in sys.path:
    sys.path.insert(0, _MULTINODE)

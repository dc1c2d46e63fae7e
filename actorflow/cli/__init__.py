"""The ``actorflow`` command line (``python -m actorflow`` does the same)."""

from actorflow.cli.main import main

__all__ = ["main"]

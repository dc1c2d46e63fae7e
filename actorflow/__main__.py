"""``python -m actorflow ...`` is the ``actorflow`` command."""

from actorflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

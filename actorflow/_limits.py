"""Numbers that mean "no limit", in one place."""

from __future__ import annotations

from typing import Final

#: A count that is never reached: ``max_retries=-1``, ``max_restarts=-1`` and the like.
UNLIMITED: Final = 1 << 30

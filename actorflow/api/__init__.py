"""The public API's implementation (users import from ``actorflow``)."""

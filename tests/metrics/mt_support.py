"""Helpers of the metrics tests: reading Prometheus text with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


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

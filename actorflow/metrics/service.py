"""The head's ``metrics`` actor: user metrics aggregated, the Prometheus text of everything.

A head service (:mod:`actorflow.cluster.services`): :func:`start` spawns :class:`MetricsActor`
at the well-known id ``metrics``. Processes tell it :class:`~.protocol.MetricUpdates`
(:mod:`.user`); asked :class:`~.protocol.Exposition`, it reads the cluster's state
(:mod:`.system`), and answers ``prometheus_client``'s text exposition of a registry whose one
collector yields the system families and every user metric.

Served at ``GET /metrics`` on the dashboard's port (the dashboard calls :func:`exposition`) and,
when asked for (``actorflow start --metrics-export-port N``), by an aiohttp app of its own on
``--metrics-host`` (default 127.0.0.1): a scraper inside a private network reaches it there.
That endpoint wants the cluster token as a bearer token (``Authorization: Bearer <token>``)
unless ``--metrics-no-auth`` says otherwise.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from actorflow._errors import ActorflowError
from actorflow.metrics.protocol import (
    COUNTER,
    GAUGE,
    HISTOGRAM,
    METRICS_ID,
    Exposition,
    MetricDef,
    MetricUpdates,
)
from actorflow.metrics.system import SystemSnapshot, gather, system_families
from actorflow.metrics.user import metrics_ref
from actorflow.runtime import ActorRef, ServiceActor

if TYPE_CHECKING:
    from actorflow.cluster.services import HeadContext

__all__ = ["CONTENT_TYPE", "MetricsActor", "UserStore", "exposition", "start"]

log = logging.getLogger("actorflow.metrics")

#: The content type of :func:`exposition`'s bytes.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: How long :func:`exposition` waits for the metrics actor.
EXPOSITION_TIMEOUT_S = 30.0


class UserStore:
    """User metrics as the head aggregates them (see :mod:`.user`)."""

    def __init__(self) -> None:
        self.defs: dict[str, MetricDef] = {}
        self.counters: dict[str, dict[tuple[str, ...], float]] = {}
        self.gauges: dict[str, dict[tuple[str, ...], tuple[float, float]]] = {}
        self.histograms: dict[str, dict[tuple[str, ...], list[float]]] = {}
        self._warned: set[str] = set()

    def _accepts(self, name: str, kind: str, tags: tuple[str, ...]) -> bool:
        known = self.defs.get(name)
        if known is not None and known.kind == kind and len(tags) == len(known.tag_keys):
            return True
        if name not in self._warned:
            self._warned.add(name)
            log.warning("metric %r: updates that do not fit its first definition (%s) are "
                        "dropped", name, known)
        return False

    def apply(self, updates: MetricUpdates) -> None:
        for d in updates.defs:
            known = self.defs.get(d.name)
            if known is None:
                self.defs[d.name] = d
            elif known != d and d.name not in self._warned:
                self._warned.add(d.name)
                log.warning("metric %r was defined twice, differently: %s, then %s; the "
                            "first stands", d.name, known, d)
        for (name, tags), value in updates.counters.items():
            if self._accepts(name, COUNTER, tags):
                series = self.counters.setdefault(name, {})
                series[tags] = series.get(tags, 0.0) + value
        for (name, tags), (value, at) in updates.gauges.items():
            if self._accepts(name, GAUGE, tags):
                series_g = self.gauges.setdefault(name, {})
                last = series_g.get(tags)
                if last is None or at >= last[1]:
                    series_g[tags] = (value, at)
        for (name, tags), counts in updates.histograms.items():
            if not self._accepts(name, HISTOGRAM, tags):
                continue
            if len(counts) != len(self.defs[name].boundaries) + 2:
                continue  # (another definition's buckets: _accepts warned of it)
            series_h = self.histograms.setdefault(name, {})
            mine = series_h.get(tags)
            if mine is None:
                series_h[tags] = list(counts)
            else:
                for i, n in enumerate(counts):
                    mine[i] += n

    def families(self) -> Iterator[Metric]:
        for name, d in sorted(self.defs.items()):
            labels = list(d.tag_keys)
            if d.kind == COUNTER:
                counter = CounterMetricFamily(name, d.description, labels=labels)
                for tags, value in sorted(self.counters.get(name, {}).items()):
                    counter.add_metric(list(tags), value)
                yield counter
            elif d.kind == GAUGE:
                gauge = GaugeMetricFamily(name, d.description, labels=labels)
                for tags, (value, _) in sorted(self.gauges.get(name, {}).items()):
                    gauge.add_metric(list(tags), value)
                yield gauge
            elif d.kind == HISTOGRAM:
                hist = HistogramMetricFamily(name, d.description, labels=labels)
                for tags, counts in sorted(self.histograms.get(name, {}).items()):
                    buckets: list[tuple[str, float]] = []
                    total = 0.0
                    for bound, n in zip((*d.boundaries, float("inf")), counts, strict=False):
                        total += n
                        buckets.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
                    hist.add_metric(list(tags), buckets, sum_value=counts[-1])
                yield hist


class _Collector:
    """The registry's one collector: what the actor put in it for this scrape."""

    def __init__(self, users: UserStore) -> None:
        self.users = users
        self.snapshot: SystemSnapshot | None = None
        self.extra: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        if self.snapshot is not None:
            yield from system_families(self.snapshot)
        yield from self.extra
        yield from self.users.families()


class MetricsActor(ServiceActor):
    """At the head: aggregates user metrics, answers the exposition (module docstring)."""

    def __init__(self, head: ActorRef, token: str, options: Mapping[str, Any]) -> None:
        self.head = head
        self.token = token
        self.users = UserStore()
        self.collector = _Collector(self.users)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.export_port: int | None = options.get("metrics_export_port")
        self.export_host: str = options.get("metrics_host") or "127.0.0.1"
        self.export_auth = not options.get("metrics_no_auth")
        self.runner: web.AppRunner | None = None
        self.url: str | None = None

    async def on_start(self) -> None:
        if self.export_port is None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.export_host, int(self.export_port))
        try:
            await site.start()
        except BaseException:
            await self.runner.cleanup()
            self.runner = None
            raise
        port = self.runner.addresses[0][1]
        host = self.export_host if ":" not in self.export_host else f"[{self.export_host}]"
        self.url = f"http://{host}:{port}/metrics"

    async def on_stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        if self.export_auth:
            given = request.headers.get("Authorization", "")
            scheme, _, credentials = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    credentials.strip().encode(), self.token.encode()):
                return web.Response(status=401, text="the cluster token is required "
                                    "(Authorization: Bearer <token>)\n",
                                    headers={"WWW-Authenticate": "Bearer"})
        try:
            body: bytes = await self.ref.ask(Exposition(), timeout=EXPOSITION_TIMEOUT_S)
        except (ActorflowError, TimeoutError) as exc:  # the head did not answer in time
            return web.Response(status=503, text=f"metrics unavailable: {exc}\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def handle(self, message: Any) -> Any:
        kind = type(message)
        if kind is MetricUpdates:
            self.users.apply(message)
            return None
        if kind is Exposition:
            return await self._exposition()
        return await super().handle(message)

    async def _exposition(self) -> bytes:
        snapshot = await gather(self.head)
        extra = await _task_families(self.head)
        # no await from here on: concurrent scrapes never see each other's snapshot
        self.collector.snapshot = snapshot
        self.collector.extra = extra
        try:
            return generate_latest(self.registry)
        finally:
            self.collector.snapshot = None
            self.collector.extra = []


async def _task_families(head: ActorRef) -> list[Metric]:
    from actorflow.metrics.tasks import task_families

    return await task_families(head)


async def exposition(head: ActorRef | None = None) -> bytes:
    """The Prometheus text exposition (:data:`CONTENT_TYPE`) of the cluster's system metrics
    and every user metric, from the ``metrics`` actor beside ``head`` (default: the head of
    this process's runtime). What the dashboard serves at ``GET /metrics``."""
    if head is None:
        from actorflow.objects.ref import current_core

        head = current_core().head
    body: bytes = await metrics_ref(head).ask(Exposition(), timeout=EXPOSITION_TIMEOUT_S)
    return body


async def start(ctx: HeadContext) -> None:
    """Spawn the metrics actor (head service); say where the export endpoint listens."""
    actor = MetricsActor(ctx.head, ctx.token, ctx.options)
    await ctx.system.spawn(lambda: actor, name=METRICS_ID, well_known=True,
                           max_concurrency=4)
    if actor.url is not None:
        ctx.info["metrics"] = actor.url

"""Reading another node's segment: the node offers its buffers for a bulk pull and the reader
pulls them straight into its own memory (tests/multinode read real remote segments this way);
when the pull fails, the reader asks for the segment again and it comes through the link. Real
cluster, real node, real segment; only the failing offer's address is made up."""

from __future__ import annotations

import numpy as np

import actorflow as af
from actorflow.cluster.node import BULK_MIN_BYTES
from actorflow.cluster.protocol import Fetched, InShm, Offered, ReadSegment
from actorflow.objects.ref import current_core
from actorflow.objects.store import RECEIVE_BUFFERS, RECEIVE_BYTES, ReceiveBuffers
from actorflow.testing import cluster

MIB = 1024 * 1024


async def test_a_node_offers_large_segments_and_a_failed_pull_falls_back_to_the_link() -> None:
    async with cluster(num_cpus=1):
        core = current_core()
        value = np.arange(2 * MIB // 8, dtype=np.float64)
        ref = af.put(value)
        (payload,) = await core.reads.payloads([ref])
        assert type(payload) is InShm
        node = await core.remote.node_ref(core.node_id)

        # asked for a bulk read, the node offers the buffers under a ticket of its listener
        offer = await node.ask(ReadSegment(payload.name, bulk=True))
        assert type(offer) is Offered and sum(offer.lengths) >= value.nbytes
        pulled = await core.remote.pull(payload, offer, node)
        assert type(pulled) is Fetched and core.remote.pull_fallbacks == 0
        assert np.array_equal(core.materialize(pulled), value)
        assert core.remote.pulled_bytes >= value.nbytes

        # a segment under BULK_MIN_BYTES comes in the answer itself
        small = af.put(np.arange(BULK_MIN_BYTES // 16, dtype=np.float64))
        (small_payload,) = await core.reads.payloads([small])
        assert type(small_payload) is InShm
        answer = await node.ask(ReadSegment(small_payload.name, bulk=True))
        assert type(answer) is Fetched

        # an offer whose listener is not there: the pull fails, the link brings the segment
        dead = Offered(offer.meta, offer.lengths, "ws://127.0.0.1:9", "no-such-ticket")
        fetched = await core.remote.pull(payload, dead, node)
        assert type(fetched) is Fetched and core.remote.pull_fallbacks == 1
        assert np.array_equal(core.materialize(fetched), value)


async def test_a_receive_buffer_is_filled_again_only_once_no_view_of_it_is_alive() -> None:
    async with cluster(num_cpus=1):
        core = current_core()
        value = np.arange(2 * MIB // 8, dtype=np.float64)
        ref = af.put(value)
        (payload,) = await core.reads.payloads([ref])
        node = await core.remote.node_ref(core.node_id)

        async def pull_once() -> np.ndarray:
            offer = await node.ask(ReadSegment(payload.name, bulk=True))
            assert type(offer) is Offered
            out = core.materialize(await core.remote.pull(payload, offer, node))
            assert isinstance(out, np.ndarray)
            return out

        buffers = core.remote.receive_buffers
        first = await pull_once()
        reused = buffers.reused
        second = await pull_once()  # the first is alive: another buffer
        assert buffers.reused == reused
        first[:] = -1.0  # writable, and its own memory
        assert np.array_equal(second, value)
        del first
        third = await pull_once()  # the first's buffer is free again: filled again
        assert buffers.reused == reused + 1
        assert np.array_equal(third, value) and np.array_equal(second, value)
        view = third[10:20]  # a view keeps its buffer busy too
        del third
        fourth = await pull_once()
        assert buffers.reused == reused + 1
        assert np.array_equal(view, value[10:20]) and np.array_equal(fourth, value)


def test_receive_buffers_keep_a_bounded_few() -> None:
    buffers = ReceiveBuffers()
    held = [buffers.take(MIB) for _ in range(RECEIVE_BUFFERS + 2)]  # all in use: none dropped
    assert buffers.statistics()["kept"] == RECEIVE_BUFFERS
    del held
    big = buffers.take(RECEIVE_BYTES + 1)  # larger than the whole pool: not kept
    assert buffers.statistics()["kept"] == RECEIVE_BUFFERS
    small = buffers.take(MIB // 2)  # reuses an idle 1 MiB one (at most twice its size)
    assert buffers.reused == 1 and len(small) == MIB // 2
    del big, small
    buffers.close()
    assert buffers.statistics() == {"kept": 0, "kept_bytes": 0, "reused": 1}

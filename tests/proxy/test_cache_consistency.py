"""The slice cache's promises under change and failure, against a scripted upstream.

Collapsed fills that outlive their first client, versions that never mix, revalidation, what is
never cached, and cache-poisoning attempts. Every wait is on observable state (the upstream's
request log and pieces sent, the proxy's /stats), bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import file_data
from tests.proxy.test_cache import SLICE, slice_files, start_cached_proxy, stats_of, wait_until
from tests.support.faulty_upstream import open_faulty_upstream
from tests.support.range_upstream import PIECE_BYTES, open_range_upstream
from tests.support.servers import raw_chunks

V1 = file_data(3 * SLICE, seed=1)
V2 = file_data(3 * SLICE, seed=2)


async def wait_for_stats(url: str, predicate: Callable[[dict[str, Any]], bool]) -> None:
    with trio.fail_after(10):
        while not predicate(await stats_of(url)):
            await trio.sleep(0.01)


def collapsed(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda stats: bool(stats["cache"]["collapsed"] == count)


async def test_first_waiter_leaving_mid_fill_does_not_cancel_it_for_the_others(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1, gate=trio.Event()) as upstream:
        assert upstream.gate is not None
        proxy = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        results: dict[int, bytes] = {}
        first_bytes = [trio.Event() for _ in range(3)]
        leave = trio.Event()

        async def viewer(number: int) -> None:
            async with (
                httpx.AsyncClient(timeout=30) as client,
                client.stream("GET", proxy + "/v.mp4", headers={"Range": "bytes=0-65535"}) as r,
                raw_chunks(r) as chunks,
            ):
                received = b""
                async for chunk in chunks:
                    received += chunk
                    first_bytes[number].set()
                    if number == 0:
                        await leave.wait()
                        return  # the first client leaves mid-fill
                results[number] = received

        async with trio.open_nursery() as viewers:
            # One at a time, so the client that leaves is the one that started the fill.
            viewers.start_soon(viewer, 0)
            await upstream.wait_for(lambda: upstream.pieces_sent == 1)
            for number in (1, 2):
                viewers.start_soon(viewer, number)
                await wait_for_stats(proxy, collapsed(number))
            # Every waiter got the first piece while the upstream is held: streamed, not after.
            for event in first_bytes:
                with trio.fail_after(10):
                    await event.wait()
            assert upstream.pieces_sent == 1
            leave.set()
            await wait_for_stats(proxy, lambda s: s["streams"]["aborted"] == 1)
            upstream.gate.set()
        assert results == {1: V1[:SLICE], 2: V1[:SLICE]}
        assert upstream.ranges_served() == ["bytes=0-65535"]
        assert upstream.peer_gone == 0


async def test_last_waiter_leaving_cancels_the_fill_and_keeps_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1, gate=trio.Event()) as upstream:
        assert upstream.gate is not None
        proxy = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", proxy + "/v.mp4", headers={"Range": "bytes=0-65535"}) as r,
            raw_chunks(r) as chunks,
        ):
            async for _ in chunks:
                break  # leaves with the first piece of the slice, before the rest came
        await upstream.wait_for(lambda: upstream.peer_gone == 1)
        upstream.gate = None
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(proxy + "/v.mp4", headers={"Range": "bytes=0-99"})
        assert response.content == V1[:100]
        assert upstream.ranges_served() == ["bytes=0-65535", "bytes=0-65535"]
        # The second fill outlives its 100-byte answer and stores the slice (in the cache's
        # nursery, after the answer ended): wait for that, then nothing else may be left,
        # of the cancelled fill or of this one.
        cache_dir = tmp_path / "cache"
        await wait_until(lambda: bool(slice_files(cache_dir)))
        await wait_until(lambda: not any((cache_dir / "tmp").iterdir()))  # fails past 10 s
        assert len(slice_files(cache_dir)) == 1


async def test_a_version_change_between_two_slices_aborts_the_answer(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1, gate=trio.Event()) as upstream:
        assert upstream.gate is not None
        proxy = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        received = b""
        async with httpx.AsyncClient(timeout=30) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                async with (
                    client.stream("GET", proxy + "/v.mp4") as response,
                    raw_chunks(response) as chunks,
                ):
                    assert response.headers["etag"] == '"v1"'
                    async for chunk in chunks:
                        received += chunk
                        if len(received) == PIECE_BYTES:
                            # Slice 0 is being sent; slice 1 will be of another version.
                            upstream.replace(V2, '"v2"')
                            upstream.gate.set()
            assert len(received) < len(V1)
            assert received == V1[: len(received)]  # never a byte of v2 after v1's head
            # Self-heal: the next answer is the new version, whole.
            response = await client.get(proxy + "/v.mp4")
            assert (response.headers["etag"], response.content) == ('"v2"', V2)


async def test_revalidation_304_keeps_and_a_new_etag_replaces(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1, extra_headers=[("Cache-Control", "max-age=0")]) as up:
        proxy = await start_cached_proxy(nursery, up.url, tmp_path / "cache")
        async with httpx.AsyncClient(timeout=30) as client:
            first = await client.get(proxy + "/v.mp4")
            assert first.content == V1
            # The client can have every byte before the last slice is on disk: wait for it,
            # so the next answer revalidates a stored slice.
            await wait_until(lambda: len(slice_files(tmp_path / "cache")) == 3)
            again = await client.get(proxy + "/v.mp4", headers={"Range": "bytes=70000-"})
            assert again.content == V1[70000:]
            assert [seen.status for seen in up.requests] == [206, 206, 206, 304]
            assert up.requests[-1].headers["if-none-match"] == '"v1"'
            up.replace(V2, '"v2"')  # same size, new ETag: between two answers
            third = await client.get(proxy + "/v.mp4", headers={"Range": "bytes=70000-"})
            assert (third.headers["etag"], third.content) == ('"v2"', V2[70000:])
            whole = await client.get(proxy + "/v.mp4")
            assert whole.content == V2
        cache = (await stats_of(proxy))["cache"]
        assert (cache["miss"], cache["revalidated"]) == (2, 2)


async def test_an_upstream_ignoring_range_is_relayed_and_then_bypassed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1, honour_range=False) as upstream:
        proxy = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(3):
                response = await client.get(proxy + "/v.mp4", headers={"Range": "bytes=0-9"})
                assert (response.status_code, response.content) == (200, V1)
        # One slice request told the cache; then every request was relayed once.
        assert len(upstream.requests) == 4
        assert (await stats_of(proxy))["cache"]["bypass"] == 3


@pytest.mark.parametrize(
    "header",
    [
        ("Cache-Control", "no-store"),
        ("Cache-Control", "private, max-age=600"),
        ("Vary", "Cookie"),
    ],
)
async def test_answers_the_upstream_forbids_to_share_are_not_cached(
    nursery: trio.Nursery, tmp_path: Path, header: tuple[str, str]
) -> None:
    async with open_range_upstream(V1, extra_headers=[header]) as upstream:
        proxy = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(2):
                response = await client.get(proxy + "/v.mp4", headers={"Range": "bytes=5-9"})
                assert (response.status_code, response.content) == (206, V1[5:10])
        assert not list((tmp_path / "cache" / "objects").rglob("*.0"))
        assert len(upstream.requests) == 3  # the slice request, then two relays


async def test_weak_etags_and_credentials_are_relayed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1, etag='W/"v1"') as upstream:
        proxy = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(proxy + "/v.mp4", headers={"Range": "bytes=5-9"})
            assert response.content == V1[5:10]
            response = await client.get(
                proxy + "/other.mp4", headers={"Range": "bytes=5-9", "Authorization": "Bearer x"}
            )
            assert response.content == V1[5:10]
        assert upstream.requests[-1].headers["authorization"] == "Bearer x"
        assert upstream.requests[-1].headers["range"] == "bytes=5-9"
        assert not list((tmp_path / "cache" / "objects").rglob("*.0"))


async def test_range_and_query_range_never_poison_other_answers(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1) as upstream:
        proxy = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(proxy + "/v.mp4?range=0-99")
            assert (response.status_code, response.content) == (206, V1[:100])
            response = await client.get(proxy + "/v.mp4", headers={"Range": "bytes=100-199"})
            assert response.content == V1[100:200]
            whole = await client.get(proxy + "/v.mp4")
            assert (whole.status_code, whole.content) == (200, V1)
            query = await client.get(proxy + "/v.mp4?x=1&range=bytes%3D5-9")
            assert (query.status_code, query.content) == (206, V1[5:10])
            conflict = await client.get(
                proxy + "/v.mp4?range=0-9", headers={"Range": "bytes=10-19"}
            )
            assert conflict.status_code == 416
            assert conflict.headers["content-range"] == f"bytes */{len(V1)}"
        # ?range= never reached the upstream, nor a client's Range: only slice requests did.
        assert all("range=" not in seen.target for seen in upstream.requests)
        assert {seen.headers["range"] for seen in upstream.requests} <= {
            f"bytes={i * SLICE}-{(i + 1) * SLICE - 1}" for i in range(3)
        }


async def test_upstream_failures_give_502_and_the_next_request_tries_again(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1) as upstream:
        url = upstream.url
    # The upstream is gone: its port refuses connections.
    proxy = await start_cached_proxy(nursery, url, tmp_path / "cache")
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(proxy + "/v.mp4")
    assert response.status_code == 502


async def test_an_upstream_that_never_answers_gives_504(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_faulty_upstream("hang_before_headers") as upstream:
        proxy = await start_cached_proxy(
            nursery, upstream.url, tmp_path / "cache", response_timeout_s=0.5
        )
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(proxy + "/v.mp4", headers={"Range": "bytes=0-9"})
        assert response.status_code == 504


async def test_an_upstream_truncating_a_slice_aborts_the_answer_and_keeps_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_range_upstream(V1, truncate_after=1000) as upstream:
        proxy = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        async with httpx.AsyncClient(timeout=30) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(proxy + "/v.mp4")  # the head went out: aborted, never short
            assert not slice_files(tmp_path / "cache")
            upstream.truncate_after = None
            response = await client.get(proxy + "/v.mp4")  # the next request tries again
            assert response.content == V1
        assert upstream.ranges_served().count(f"bytes=0-{SLICE - 1}") == 2

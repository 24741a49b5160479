"""The origin over real loopback sockets: Hypercorn started in the test, real clients."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import SINGLE_RANGE_CASES, SMALL, file_data
from tests.support.clients import curl, curl_resume
from tests.support.multipart_reader import parse_byteranges
from tests.support.servers import (
    assert_idle_connection_closes,
    raw_chunks,
    raw_exchange,
    start_origin,
)

BIG = file_data(3_000_000)


async def get(url: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url, **kwargs)  # type: ignore[arg-type]


# --- whole files, HEAD and headers ----------------------------------------------------------


async def test_get_root_serves_default_file_whole_with_validators(origin_url: str) -> None:
    response = await get(origin_url + "/")
    assert response.status_code == 200
    assert response.content == BIG
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(BIG))
    assert response.headers["etag"].startswith('"')
    assert response.headers["last-modified"].endswith("GMT")


async def test_head_answers_get_headers_without_body(origin_url: str) -> None:
    async with httpx.AsyncClient() as client:
        head = await client.head(origin_url + "/media/big.bin")
        get_ = await client.get(origin_url + "/media/big.bin")
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-length", "etag", "last-modified", "accept-ranges", "content-type"):
        assert head.headers[name] == get_.headers[name]


async def test_head_with_range_answers_206_without_reading_the_file(
    origin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reads(*args: object) -> object:
        raise AssertionError("HEAD read the file")

    monkeypatch.setattr("trio_range.server.file_body.file_regions", no_reads)
    async with httpx.AsyncClient() as client:
        response = await client.head(origin_url + "/?range=20-345")
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 20-345/{len(BIG)}"
    assert response.headers["content-length"] == "326"


async def test_content_type_comes_from_the_extension(origin_url: str) -> None:
    response = await get(origin_url + "/media/sub/clip.mp4")
    assert response.headers["content-type"] == "video/mp4"
    assert (await get(origin_url + "/media/small.bin")).headers[
        "content-type"
    ] == "application/octet-stream"


async def test_empty_file_answers_200_even_to_a_range(origin_url: str) -> None:
    response = await get(origin_url + "/media/empty.bin", headers={"Range": "bytes=0-10"})
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"


# --- ranges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_value", "start", "stop"),
    # RFC 9110 §14.1: the unit is case-insensitive (nginx disagrees, so this one is ours).
    [*SINGLE_RANGE_CASES, ("BYTES=10-", 10, 11)],
)
async def test_single_range_answers_206_with_exact_bytes(
    origin_url: str, range_value: str, start: int, stop: int
) -> None:
    response = await get(origin_url + "/media/small.bin", headers={"Range": range_value})
    assert response.status_code == 206
    assert response.content == SMALL[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/11"
    assert response.headers["content-length"] == str(stop - start)
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("range_value", ["bytes=11-", "bytes=12-12", "bytes=100-1000", "bytes=-0"])
async def test_unsatisfiable_range_answers_416_with_star_content_range(
    origin_url: str, range_value: str
) -> None:
    response = await get(origin_url + "/media/small.bin", headers={"Range": range_value})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */11"


@pytest.mark.parametrize(
    "range_value",
    ["bytes=--6", "bytes=-6-", "items=0-4", "bytes=5-2", "bytes=a-b", "bytes=", "0-4"],
)
async def test_invalid_or_foreign_range_is_ignored_with_200(
    origin_url: str, range_value: str
) -> None:
    response = await get(origin_url + "/media/small.bin", headers={"Range": range_value})
    assert response.status_code == 200
    assert response.content == SMALL


async def test_query_range_works_like_the_header_and_is_inclusive(origin_url: str) -> None:
    for query in ("20-345", "bytes=20-345"):
        response = await get(origin_url + "/", params={"range": query})
        assert response.status_code == 206
        assert len(response.content) == 326
        assert response.content == BIG[20:346]
        assert response.headers["content-range"] == f"bytes 20-345/{len(BIG)}"


async def test_query_and_header_that_agree_are_served(origin_url: str) -> None:
    response = await get(origin_url + "/?range=20-345", headers={"Range": "bytes=20-345"})
    assert response.status_code == 206
    assert response.content == BIG[20:346]


async def test_query_and_header_that_disagree_answer_416(origin_url: str) -> None:
    response = await get(origin_url + "/?range=100-500", headers={"Range": "bytes=90-2000"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(BIG)}"


async def test_several_ranges_answer_a_strict_multipart_body(origin_url: str) -> None:
    response = await get(origin_url + "/", headers={"Range": "bytes=0-99, 500-599,-10"})
    assert response.status_code == 206
    assert response.headers["content-length"] == str(len(response.content))
    parts = parse_byteranges(response.content, response.headers["content-type"])
    assert [(ct, cr) for ct, cr, _ in parts] == [
        ("application/octet-stream", f"bytes 0-99/{len(BIG)}"),
        ("application/octet-stream", f"bytes 500-599/{len(BIG)}"),
        ("application/octet-stream", f"bytes {len(BIG) - 10}-{len(BIG) - 1}/{len(BIG)}"),
    ]
    assert [data for _, _, data in parts] == [BIG[0:100], BIG[500:600], BIG[-10:]]


async def test_multipart_parts_come_in_the_order_the_client_asked(origin_url: str) -> None:
    # RFC 9110 §15.3.7.2: parts in the order of the range-specs; 0-9 and 10-19 touch, so they
    # are one part, in the place of 10-19, the first of the two.
    response = await get(origin_url + "/", headers={"Range": "bytes=-10,10-19,500-599,0-9"})
    assert response.status_code == 206
    parts = parse_byteranges(response.content, response.headers["content-type"])
    assert [cr for _, cr, _ in parts] == [
        f"bytes {len(BIG) - 10}-{len(BIG) - 1}/{len(BIG)}",
        f"bytes 0-19/{len(BIG)}",
        f"bytes 500-599/{len(BIG)}",
    ]
    assert [data for _, _, data in parts] == [BIG[-10:], BIG[0:20], BIG[500:600]]


async def test_overlapping_ranges_coalesce_into_one_plain_206(origin_url: str) -> None:
    response = await get(origin_url + "/media/small.bin", headers={"Range": "bytes=0-4,3-7"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 0-7/11"
    assert response.content == SMALL[:8]


async def test_ranges_summing_past_the_size_are_ignored(origin_url: str) -> None:
    value = "bytes=0-,1-,2-,3-,4-"
    response = await get(origin_url + "/media/small.bin", headers={"Range": value})
    assert response.status_code == 200
    assert response.content == SMALL


async def test_more_than_100_ranges_are_ignored(origin_url: str) -> None:
    value = "bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(101))
    response = await get(origin_url + "/", headers={"Range": value})
    assert response.status_code == 200
    assert len(response.content) == len(BIG)


async def test_multipart_spanning_many_chunks_is_exact(origin_url: str) -> None:
    # Parts larger than the 64 KiB chunk size exercise the chunked reads inside a part.
    value = "bytes=10-200000,1000000-1400000"
    response = await get(origin_url + "/", headers={"Range": value})
    parts = parse_byteranges(response.content, response.headers["content-type"])
    assert [data for _, _, data in parts] == [BIG[10:200001], BIG[1000000:1400001]]


# --- preconditions and If-Range -------------------------------------------------------------


async def validators(origin_url: str) -> tuple[str, str]:
    async with httpx.AsyncClient() as client:
        head = await client.head(origin_url + "/media/small.bin")
    return head.headers["etag"], head.headers["last-modified"]


async def test_if_range_with_current_etag_serves_the_range(origin_url: str) -> None:
    etag, _ = await validators(origin_url)
    response = await get(
        origin_url + "/media/small.bin", headers={"Range": "bytes=2-4", "If-Range": etag}
    )
    assert response.status_code == 206
    assert response.content == SMALL[2:5]


async def test_if_range_with_stale_or_weak_etag_serves_everything(origin_url: str) -> None:
    etag, _ = await validators(origin_url)
    for stale in ('"not-the-etag"', "W/" + etag):
        response = await get(
            origin_url + "/media/small.bin", headers={"Range": "bytes=2-4", "If-Range": stale}
        )
        assert response.status_code == 200
        assert response.content == SMALL


async def test_if_range_with_date_must_equal_last_modified(origin_url: str) -> None:
    _, last_modified = await validators(origin_url)
    current = await get(
        origin_url + "/media/small.bin", headers={"Range": "bytes=2-4", "If-Range": last_modified}
    )
    assert current.status_code == 206
    stale = await get(
        origin_url + "/media/small.bin",
        headers={"Range": "bytes=2-4", "If-Range": "Thu, 01 Jan 1998 00:00:00 GMT"},
    )
    assert stale.status_code == 200


async def test_if_none_match_current_etag_answers_304_before_range(origin_url: str) -> None:
    etag, _ = await validators(origin_url)
    response = await get(
        origin_url + "/media/small.bin", headers={"If-None-Match": etag, "Range": "bytes=0-1"}
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag


async def test_if_modified_since_last_modified_answers_304(origin_url: str) -> None:
    _, last_modified = await validators(origin_url)
    response = await get(
        origin_url + "/media/small.bin", headers={"If-Modified-Since": last_modified}
    )
    assert response.status_code == 304


async def test_if_match_mismatch_answers_412(origin_url: str) -> None:
    response = await get(origin_url + "/media/small.bin", headers={"If-Match": '"other"'})
    assert response.status_code == 412
    old = "Thu, 01 Jan 1998 00:00:00 GMT"
    response = await get(origin_url + "/media/small.bin", headers={"If-Unmodified-Since": old})
    assert response.status_code == 412


# --- paths and methods ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"/media/../secret.txt",
        b"/media/%2e%2e/secret.txt",
        b"/media/%2E%2E%2Fsecret.txt",
        b"/media/..%2fsecret.txt",
        b"/media/sub/../../secret.txt",
        b"/media/escape.txt",
        b"/media//etc/passwd",
        b"/media/%2fetc%2fpasswd",
        b"/media/small.bin%00",
        b"/media/.hidden",
        b"/media/sub",
        b"/media/%252e%252e/secret.txt",
        b"/../secret.txt",
        b"/media/..\\secret.txt",
    ],
)
async def test_paths_outside_the_media_folder_are_not_found(origin_url: str, target: bytes) -> None:
    raw = await raw_exchange(
        origin_url, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status_line = raw.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"404", b"400"), raw[:200]
    assert b"outside the media folder" not in raw
    assert b"root:" not in raw
    # The answer never echoes the path it refused.
    assert b"secret" not in raw
    assert b"passwd" not in raw


async def test_symlink_that_stays_inside_is_served(origin_url: str) -> None:
    response = await get(origin_url + "/media/inside-link.bin")
    assert response.status_code == 200
    assert response.content == SMALL


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
async def test_other_methods_answer_405_with_allow(origin_url: str, method: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.request(method, origin_url + "/media/small.bin")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_listing_names_sizes_and_types(origin_url: str) -> None:
    response = await get(origin_url + "/media/")
    entries = {entry["name"]: entry for entry in response.json()}
    assert entries["small.bin"] == {
        "name": "small.bin",
        "size": 11,
        "type": "application/octet-stream",
    }
    assert entries["sub/clip.mp4"]["type"] == "video/mp4"
    assert "escape.txt" not in entries


async def test_healthz_answers_ok(origin_url: str) -> None:
    response = await get(origin_url + "/healthz")
    assert response.status_code == 200


# --- framing on one connection --------------------------------------------------------------


def split_responses(raw: bytes, count: int) -> list[tuple[bytes, bytes]]:
    """Cut ``count`` responses off ``raw`` by their Content-Length; the rest must be empty."""
    responses = []
    for _ in range(count):
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, raw[:200]
        length = 0
        is_head = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            if name.strip().lower() == b"x-test-head":
                is_head = True
        if is_head:
            length = 0
        responses.append((head, rest[:length]))
        raw = rest[length:]
    assert raw == b"", f"bytes after the last response: {raw[:100]!r}"
    return responses


@pytest.mark.parametrize(
    "second",
    [
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n",
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=2-5\r\n",
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,5-6\r\n",
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=50-\r\n",
        b"GET /media/nope HTTP/1.1\r\nHost: x\r\n",
    ],
)
async def test_two_requests_on_one_connection_have_exact_lengths(
    origin_url: str, second: bytes
) -> None:
    first = b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3,6-8\r\n\r\n"
    raw = await raw_exchange(origin_url, first + second + b"Connection: close\r\n\r\n")
    (head1, _), (head2, _) = split_responses(raw, 2)
    assert head1.startswith(b"HTTP/1.1 206")
    assert head2.startswith(b"HTTP/1.1 ")


async def test_head_then_get_on_one_connection_keeps_framing(origin_url: str) -> None:
    raw = await raw_exchange(
        origin_url,
        b"HEAD /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"content-length: 11" in head.lower()
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]
    assert rest.endswith(b"\r\n\r\n" + SMALL)


# --- streaming, aborts and connection lifetime ----------------------------------------------


async def test_file_that_shrinks_while_sent_aborts_the_connection(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    url = await start_origin(nursery, media_dir=media_dir, chunk_size_bytes=16 * 1024)
    target = media_dir / "big.bin"
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", url + "/media/big.bin") as response:
            assert response.headers["content-length"] == str(len(BIG))
            received = 0
            with pytest.raises(httpx.RemoteProtocolError):
                async with raw_chunks(response) as chunks:
                    async for chunk in chunks:
                        if received == 0:
                            os.truncate(target, 100_000)
                        received += len(chunk)
    assert received < len(BIG)


async def test_idle_keep_alive_connection_is_closed_after_the_timeout(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    url = await start_origin(nursery, media_dir=media_dir, keep_alive_timeout_s=0.5)
    await assert_idle_connection_closes(url, b"/media/small.bin", SMALL)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def held_for_clients(port: int, media_dir: Path) -> list[str]:
    """What this process still holds for clients of the server on ``port`` (Linux /proc).

    The files it opened under ``media_dir`` and the sockets of connections it accepted on
    ``port`` (its listening socket aside); a connection it closed has no socket left.
    """
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            if local_port == port and state != "0A":  # 0A: LISTEN
                sockets.add(f"socket:[{inode}]")
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue  # closed while we looked (the listing's own descriptor, for one)
        if target in sockets or target.startswith(f"{media_dir.resolve()}/"):
            held.append(target)
    return held


async def test_clients_leaving_early_leak_no_file_descriptors(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    url = await start_origin(nursery, media_dir=media_dir, chunk_size_bytes=16 * 1024)
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def leave_after(request: bytes, read_bytes: int) -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request)
            got = 0
            while got < read_bytes:
                got += len(await stream.receive_some(read_bytes - got))

    # Warm up (the first request imports and allocates), then count once the server has let
    # go of the warm-up's connection and file.
    await leave_after(b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    with trio.fail_after(10):
        while held_for_clients(int(port), media_dir):
            await trio.sleep(0.01)
    before = open_fds()
    for i in range(30):
        request = (
            b"GET /media/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-10,20000-2999999\r\n\r\n"
        )
        await leave_after(request, 0 if i % 3 == 0 else 1 + i * 1000)
    with trio.fail_after(10):
        while open_fds() > before:
            await trio.sleep(0.02)
    stats = (await get(url + "/stats")).json()
    assert stats["streams"]["active"] == 0
    assert stats["streams"]["aborted"] >= 20


async def test_stream_aborted_by_the_client_is_counted_with_its_bytes(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    url = await start_origin(nursery, media_dir=media_dir, chunk_size_bytes=16 * 1024)
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", url + "/media/big.bin") as response:
            received = 0
            async with raw_chunks(response) as chunks:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > 200_000:
                        break
    with trio.fail_after(10):
        while True:
            stats = (await get(url + "/stats")).json()
            if stats["streams"]["aborted"] == 1:
                break
            await trio.sleep(0.02)
    assert stats["streams"]["active"] == 0
    assert stats["streams"]["aborted_bytes"] >= received


# --- curl as a real client ------------------------------------------------------------------


async def test_curl_range_option_fetches_exact_bytes(origin_url: str) -> None:
    result = await trio.to_thread.run_sync(curl, "-r", "100-1099", origin_url + "/media/big.bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout == BIG[100:1100]


async def test_curl_resume_completes_an_interrupted_download(
    origin_url: str, tmp_path: Path
) -> None:
    resumed = await trio.to_thread.run_sync(
        curl_resume, origin_url + "/media/big.bin", BIG[:1_234_567], tmp_path
    )
    assert resumed == BIG

"""The soak of tests/support/soak.py (`make soak`), short: a few seconds, 20 clients, the same
leak checks."""

from __future__ import annotations

from pathlib import Path

from tests.support.soak import SoakConfig, print_report, soak


async def test_short_soak_loses_no_byte_and_leaks_nothing(tmp_path: Path) -> None:
    config = SoakConfig(
        duration_s=3.0,
        clients=20,
        warmup_s=1.0,
        file_size_bytes=16 * 1024 * 1024,
        origin_keep_alive_s=0.5,
        # RSS is taken after malloc_trim (soak.release_free_heap): it grew by 0.1 to 0.9 MiB in
        # 30 runs, alone, after tests/test_real_clients.py and under CPU load; a leak of 64 KiB
        # per request grew it by 8.8 to 26 MiB under load (66 to 202 client requests), by 36 to
        # 43 MiB without.
        rss_tolerance_mib=4.0,
    )
    report = await soak(config, tmp_path)
    print_report(report)  # shown by pytest when the test fails
    assert report.problems == []
    tally = report.tally
    # The run did what it says: requests of every kind, intended aborts, slow readers.
    assert tally.completed > 20
    assert tally.aborted > 0
    assert tally.multi > 0
    assert tally.slow > 0
    assert tally.bytes_verified > 0
    # Leaks, stated once more where a reader of this test looks for them.
    assert report.end.tasks <= report.baseline.tasks
    assert report.end.sockets_but_pool <= report.baseline.sockets_but_pool
    assert report.end.media_files == 0
    assert report.end.client_sockets == report.end.proxy_accepted == 0

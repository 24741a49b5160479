"""GDAL reading a Cloud-Optimized GeoTIFF over HTTP as its users do: /vsicurl/ with multi-range
GETs on (``GDAL_HTTP_MULTIRANGE=SINGLE_GET``), from the origin, through the proxy in front of it,
and through the proxy in front of nginx.

GDAL finds the parts of a ``multipart/byteranges`` answer by searching its headers for the exact
bytes ``Content-Type: multipart/byteranges; boundary=``. With lowercase names it reported
"Could not find" and retried, then fell back to one request per range. Each test compares the
pixels GDAL read over HTTP with a local read of the same file, and counts what the server saw:
one multi-range GET for the window, no retry, no fallback.

The programs are Debian's gdal-bin (scripts/install-system-deps.sh installs it); a missing
one fails its test with the command that installs it, never a skip.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import file_data
from tests.support.nginx import open_nginx
from tests.support.servers import proxy_config, start_app, start_origin
from trio_range.proxy.app import create_app as create_proxy

INSTALL = "scripts/install-system-deps.sh (make system-deps) installs Debian's gdal-bin"
SIZE = 1024  # pixels a side: 4 x 4 tiles of 256, overviews of 512 and 256
# A window across 3 x 2 tiles: two runs of adjacent tiles in the file, so one multi-range GET.
WINDOW = ("200", "200", "500", "300")
RUN_TIMEOUT_S = 60.0

# What GDAL's users set for COGs over HTTP, plus no retries (a retry is what this looks for)
# and debug output (the requests GDAL made, in its own words, for the failure messages).
GDAL_ENV = {
    "GDAL_HTTP_MULTIRANGE": "SINGLE_GET",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_HTTP_TIMEOUT": "20",
    "GDAL_PAM_ENABLED": "NO",
    "CPL_DEBUG": "ON",
}
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def program(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: {INSTALL}"
    return found


def gdal_env() -> dict[str, str]:
    # Loopback only: a proxy from the environment would stand between GDAL and our server.
    kept = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    return {**kept, **GDAL_ENV}


def run_sync(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program(command[0]), *command[1:]],
        capture_output=True,
        text=True,
        env=gdal_env(),
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


async def run(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a GDAL program in a worker thread (bounded in time); its exit status must be 0."""
    done = await trio.to_thread.run_sync(functools.partial(run_sync, *command))
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def checksums(gdalinfo_output: str) -> list[str]:
    return [line.strip() for line in gdalinfo_output.splitlines() if "hecksum" in line]


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiled, uncompressed COG (1.4 MB) of pseudo-random pixels, in a folder of its own."""
    work = tmp_path_factory.mktemp("gdal")
    (work / "pixels.bin").write_bytes(file_data(SIZE * SIZE, seed=11))
    # A raw raster described by a VRT: one file names the other, so no directory listing is
    # needed (GDAL_DISABLE_READDIR_ON_OPEN would hide an ENVI or world-file sidecar).
    (work / "pixels.vrt").write_text(
        f'<VRTDataset rasterXSize="{SIZE}" rasterYSize="{SIZE}">'
        '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
        '<SourceFilename relativeToVRT="1">pixels.bin</SourceFilename>'
        f"<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>{SIZE}</LineOffset>"
        "</VRTRasterBand></VRTDataset>"
    )
    media = work / "media"
    media.mkdir()
    created = run_sync(
        "gdal_translate",
        "-q",
        "-of",
        "COG",
        "-co",
        "BLOCKSIZE=256",
        "-co",
        "COMPRESS=NONE",
        str(work / "pixels.vrt"),
        str(media / "cog.tif"),
    )
    assert created.returncode == 0, created.stderr
    return media / "cog.tif"


async def stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url + "/stats")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]


def requests_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Requests, range kinds and bytes a server counted between two /stats snapshots."""
    seen = {kind: after["ranges"][kind] - before["ranges"][kind] for kind in after["ranges"]}
    seen["requests"] = after["requests"]["total"] - before["requests"]["total"]
    seen["bytes"] = after["bytes_sent"] - before["bytes_sent"]
    return seen


@dataclass(frozen=True)
class WindowRead:
    """What reading the window took: each counted server's view, and GDAL's own account."""

    seen: list[dict[str, int]]
    downloads: list[str]  # GDAL's "Downloading a-b, ..., c-d" lines
    errors: list[str]  # GDAL's ERROR lines ("Could not find 'Content-Type: multipart/...'")


async def read_window_over_http(
    base_url: str, cog: Path, out: Path, counted: list[str]
) -> WindowRead:
    """Read ``base_url``/media/cog.tif with GDAL as the module docstring says; check the pixels.

    The counts are those of each server in ``counted`` while gdal_translate read the window.
    """
    url = f"/vsicurl/{base_url}/media/cog.tif"
    remote_info = await run("gdalinfo", "-checksum", url)
    local_info = await run("gdalinfo", "-checksum", str(cog))
    assert "Size is 1024, 1024" in remote_info.stdout
    assert "Overviews: 512x512, 256x256" in remote_info.stdout
    assert checksums(remote_info.stdout) == checksums(local_info.stdout)
    assert len(checksums(local_info.stdout)) == 2  # the band's and its overviews'

    before = [await stats(server) for server in counted]
    remote = await run("gdal_translate", "-srcwin", *WINDOW, url, str(out / "remote.tif"))
    after = [await stats(server) for server in counted]
    await run("gdal_translate", "-srcwin", *WINDOW, str(cog), str(out / "local.tif"))
    assert (out / "remote.tif").read_bytes() == (out / "local.tif").read_bytes()
    lines = remote.stderr.splitlines()
    return WindowRead(
        seen=[requests_between(b, a) for b, a in zip(before, after, strict=True)],
        downloads=[line for line in lines if "VSICURL: Downloading" in line],
        errors=[line for line in lines if "ERROR" in line],
    )


def assert_one_multi_range_request(read: WindowRead, seen: dict[str, int]) -> None:
    # HEAD for the size, GET of the header (one range), then the window in one multi-range GET.
    # A failed multipart parse shows as a second multi GET (GDAL's retry), then single GETs.
    account = f"{seen}, GDAL: {read.downloads} {read.errors}"
    assert (seen["requests"], seen["multi"], seen["single"]) == (3, 1, 1), account
    assert read.errors == [], account
    assert sum(", ..., " in line for line in read.downloads) == 1, account


async def test_gdal_reads_a_cog_window_from_the_origin_in_one_multi_range_request(
    nursery: trio.Nursery, cog: Path, tmp_path: Path
) -> None:
    origin = await start_origin(nursery, media_dir=cog.parent)
    read = await read_window_over_http(origin, cog, tmp_path, [origin])
    assert_one_multi_range_request(read, read.seen[0])


async def test_gdal_reads_a_cog_window_through_the_proxy_in_one_multi_range_request(
    nursery: trio.Nursery, cog: Path, tmp_path: Path
) -> None:
    origin = await start_origin(nursery, media_dir=cog.parent)
    config = proxy_config(origin)
    proxy = await start_app(nursery, create_proxy(config), config)
    read = await read_window_over_http(proxy, cog, tmp_path, [proxy, origin])
    at_proxy, at_origin = read.seen
    assert_one_multi_range_request(read, at_proxy)
    assert_one_multi_range_request(read, at_origin)


@pytest.mark.nginx
async def test_gdal_reads_a_cog_window_through_the_proxy_in_front_of_nginx(
    nursery: trio.Nursery, cog: Path, tmp_path: Path
) -> None:
    # nginx's media folder is the URL's /media/: serve the COG's folder's parent.
    async with open_nginx(root=cog.parent.parent) as nginx:
        config = proxy_config(nginx.url)
        proxy = await start_app(nursery, create_proxy(config), config)
        read = await read_window_over_http(proxy, cog, tmp_path, [proxy])
        assert_one_multi_range_request(read, read.seen[0])

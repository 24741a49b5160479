#!/usr/bin/env bash
# Installs the system programs the tests talk to (real peers, not doubles), from Debian's packages,
# only where they are missing. Idempotent; CI and `make test` call it on a clean machine.
set -euo pipefail

# command -> Debian package that provides it
declare -A wanted=(
  [nginx]=nginx-light
  [curl]=curl
  [wget]=wget
  # tests/test_stats.py renders the dashboard page in headless Chromium.
  [chromium]=chromium
  # tests/test_real_clients.py reads and seeks the video over HTTP; test_player.py makes a long clip.
  [ffmpeg]=ffmpeg
  [ffprobe]=ffmpeg
  # tests/test_deployment.py validates docker-compose.yml offline (no Docker engine needed).
  [docker-compose]=docker-compose
  # tests/test_stats_redis.py starts its own redis-server (the Redis statistics backend).
  [redis-server]=redis-server
  # make bench measures request rates with wrk.
  [wrk]=wrk
  # GDAL's command-line programs (no Python bindings) read rasters over /vsicurl/: a
  # range-request client that seeks through a file.
  [gdalinfo]=gdal-bin
  [gdal_translate]=gdal-bin
)

missing=()
for cmd in "${!wanted[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${wanted[$cmd]}")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
  else
    echo "install-system-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the package from starting a system nginx on port 80: the tests start their own.
# Packages such as nginx and redis-server start a system service on install; the tests start
# their own on free loopback ports, so services are kept from starting (policy-rc.d: 101).
added_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  added_policy=1
fi
# With recommends, as on the machines these were tried on (Chromium needs its fonts to render).
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
if [ -n "$added_policy" ]; then
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

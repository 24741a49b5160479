#!/usr/bin/env bash
# Installs the system programs the tests talk to (real peers, not doubles), from Debian's packages,
# only where they are missing. Idempotent; CI and `make test` call it on a clean machine.
set -euo pipefail

# command -> Debian package that provides it
declare -A wanted=(
  [nginx]=nginx-light
  [curl]=curl
  [wget]=wget
  # tests/stats/test_stats.py renders the dashboard page in headless Chromium.
  [chromium]=chromium
  # tests/test_real_clients.py reads and seeks the video over HTTP; tests/origin/test_player.py makes a long clip.
  [ffmpeg]=ffmpeg
  [ffprobe]=ffmpeg
  # tests/test_deployment.py validates docker-compose.yml offline (no Docker engine needed).
  [docker-compose]=docker-compose
  # tests/stats/test_stats_redis.py starts its own redis-server (the Redis statistics backend).
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

# Another installer may hold apt's locks (unattended-upgrades, on a machine that just booted):
# wait for it, up to APT_LOCK_TIMEOUT_S seconds, instead of failing. apt-get waits for the dpkg
# locks itself (DPkg::Lock::Timeout, apt >= 1.9.11), but refuses at once when another process
# holds /var/lib/apt/lists/lock (update) or /var/cache/apt/archives/lock (install), with
# "Could not get lock": that refusal is retried until the deadline.
lock_timeout_s=${APT_LOCK_TIMEOUT_S:-600}
apt_get() {
  local deadline=$((SECONDS + lock_timeout_s)) output said=
  while true; do
    # env: sudo resets the environment. LC_ALL=C: the message matched below is apt's English.
    if output=$($SUDO env LC_ALL=C DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout="$lock_timeout_s" "$@" 2>&1); then
      return 0
    fi
    if [[ $output != *"Could not get lock"* ]] || ((SECONDS >= deadline)); then
      printf '%s\n' "$output" >&2
      echo "install-system-deps: apt-get $* failed" >&2
      return 1
    fi
    if [ -z "$said" ]; then
      echo "install-system-deps: another apt holds a lock; waiting up to ${lock_timeout_s} s" >&2
      said=1
    fi
    sleep 2
  done
}

echo "install-system-deps: installing ${missing[*]}"
apt_get update -qq
# policy-rc.d keeps the package from starting a system nginx on port 80: the tests start their own.
# Packages such as nginx and redis-server start a system service on install; the tests start
# their own on free loopback ports, so services are kept from starting (policy-rc.d: 101).
# Removed on any exit, a failed or timed-out install included.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
# With recommends, as on the machines these were tried on (Chromium needs its fonts to render).
apt_get install -y -qq "${missing[@]}"

"""Configuration: frozen dataclasses with units in their field names.

Every field is settable three ways, later winning: its default, an environment variable
(``TRIO_RANGE_<ROLE>_<FIELD>``, e.g. ``TRIO_RANGE_ORIGIN_MEDIA_DIR``) and a command-line flag
(``--media-dir``). A misspelled key is an error, never silently ignored: an unknown
``TRIO_RANGE_<ROLE>_*`` variable or flag fails with one clear line. A config is checked when it
is built, however it is built (the constructor, ``dataclasses.replace``, :func:`load`): an
instance is always a valid one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from trio_range.errors import ConfigError

log = logging.getLogger("trio_range")

ENV_PREFIX = "TRIO_RANGE_"

_SAFE_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")
_RESERVED_PATHS = frozenset({"/healthz"})
_B64TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_NOTHING_DEPRECATED: Mapping[str, str] = MappingProxyType({})


def _field(default: Any, help: str, *, hypercorn: str | None = None) -> Any:
    """A setting with its help text.

    ``hypercorn`` marks a setting that only trio-range's own serving loop
    (``server.serving.serve_app``) carries out, so that plain ``hypercorn -k trio`` ignores it:
    the Hypercorn flag that does the same there, or ``""`` when Hypercorn has none.
    """
    metadata = {"help": help}
    if hypercorn is not None:
        metadata["hypercorn"] = hypercorn
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    """What every trio_range server shares: where it listens and how it treats connections."""

    host: str = _field("127.0.0.1", "address to listen on", hypercorn="--bind")
    port: int = _field(0, "TCP port to listen on", hypercorn="--bind")
    keep_alive_timeout_s: float = _field(
        5.0, "close an idle keep-alive connection after this", hypercorn="--keep-alive"
    )
    access_log: bool = _field(True, "write one structured log line per request")
    max_connections: int = _field(
        1000, "open client connections at most (503 past it)", hypercorn=""
    )
    max_streams: int = _field(256, "requests in flight at most (503 with Retry-After past it)")
    # Also Hypercorn's h11_max_incomplete_size under serve_app, but the request guards check it
    # under any server: not a serving-loop setting.
    max_header_bytes: int = _field(16384, "request line and headers at most (431 past it)")
    backlog: int = _field(1024, "pending connections the kernel queues", hypercorn="--backlog")
    shutdown_grace_s: float = _field(
        10.0,
        "on SIGTERM/Ctrl-C, let in-flight requests run this long",
        hypercorn="--graceful-timeout",
    )
    send_stall_timeout_s: float = _field(
        300.0,
        "abort a client that accepts no data for this long (a paused video may stall)",
        hypercorn="",
    )
    stats_path: str = _field(
        "/stats", "usage statistics: JSON, or a dashboard for browsers ('' = off)"
    )
    metrics_path: str = _field("/metrics", "Prometheus text exposition ('' = off)")
    stats_token: str = _field(
        "", "bearer token the stats and metrics paths require ('' = none; prefer the env variable)"
    )
    stats_backend: str = _field(
        "", "where statistics are kept: '' = this process only, or redis://host:port/db (shared)"
    )
    stats_key_prefix: str = _field(
        "trio_range", "Redis key namespace, so several deployments can share one database"
    )
    stats_push_interval_s: float = _field(
        1.0, "push this process's counts to the shared backend this often"
    )
    # -- traffic shaping (issue 16) --
    limit_rate_bytes_per_s: int = _field(0, "pace each response body at this rate (0 = off)")
    limit_rate_after_bytes: int = _field(
        0, "send this much of each paced response at full speed first (the burst)"
    )
    max_connections_per_client: int = _field(
        0,
        "connections per client address at most, 503 past it; clients behind a trusted proxy: "
        "requests in flight (0 = off)",
        hypercorn="",
    )
    trusted_proxies: str = _field(
        "", "addresses or networks whose X-Forwarded-For names the client ('' = none; a,b)"
    )
    # -- end of traffic shaping --

    ROLE = ""
    # Settings no longer used but still accepted (flag and environment variable) for one
    # release: name -> why they are ignored. load() warns and drops them. Not annotated, as
    # ROLE is not: a ClassVar would still be listed in __dataclass_fields__.
    DEPRECATED = _NOTHING_DEPRECATED

    def __post_init__(self) -> None:
        # Subclasses extend validate() (calling their base's first), not this: each check runs
        # once, whichever class is built.
        self.validate()

    def validate(self) -> None:
        """Reject values that cannot work, with a message naming the field.

        Runs when the config is built; callable again, but an instance is always valid.
        """
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        for name in ("max_connections", "max_streams", "backlog"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1024 <= self.max_header_bytes <= 1024 * 1024:
            raise ConfigError(f"max_header_bytes must be 1 KiB..1 MiB, got {self.max_header_bytes}")
        if self.send_stall_timeout_s < 1:
            raise ConfigError(f"send_stall_timeout_s must be >= 1, got {self.send_stall_timeout_s}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (
                f.name.endswith("_s")
                and isinstance(value, float)
                and (value < 0 or not math.isfinite(value))
            ):
                raise ConfigError(f"{f.name} must be a finite number >= 0, got {value}")
        for name in ("stats_path", "metrics_path"):
            path = getattr(self, name)
            # The path is written into the dashboard page and its script URL: plain characters only.
            if path and (not _SAFE_PATH.fullmatch(path) or path in _RESERVED_PATHS):
                raise ConfigError(
                    f"{name} must be '' or a path like /stats (not /healthz), got {path!r}"
                )
        # The dashboard's script is served under stats_path.
        stats_prefix = self.stats_path + "/"
        if self.stats_path and (
            self.metrics_path == self.stats_path or self.metrics_path.startswith(stats_prefix)
        ):
            raise ConfigError("metrics_path must differ from stats_path and not lie under it")
        # RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
        if self.stats_token and not _B64TOKEN.fullmatch(self.stats_token):
            raise ConfigError("stats_token must be a bearer token (letters, digits, -._~+/ then =)")
        if self.stats_backend and not self.stats_backend.startswith(("redis://", "rediss://")):
            raise ConfigError(
                "stats_backend must be '' or a redis:// URL"  # not echoed: it may hold a password
            )
        if not _KEY_PREFIX.fullmatch(self.stats_key_prefix):
            raise ConfigError("stats_key_prefix must be letters, digits and ._:- (at most 64)")
        if not 0.05 <= self.stats_push_interval_s <= 60:
            raise ConfigError("stats_push_interval_s must be 0.05..60")
        self._validate_shaping()

    def _validate_shaping(self) -> None:
        for name in (
            "limit_rate_bytes_per_s",
            "limit_rate_after_bytes",
            "max_connections_per_client",
        ):
            if not 0 <= getattr(self, name) <= 1 << 40:
                raise ConfigError(f"{name} must be 0 (off)..2**40, got {getattr(self, name)}")
        trusted_networks(self.trusted_proxies)


@dataclasses.dataclass(frozen=True, slots=True)
class OriginConfig(ServerConfig):
    """The origin: serves the files of one media folder."""

    port: int = _field(9090, "TCP port to listen on", hypercorn="--bind")
    media_dir: Path = _field(Path("media"), "folder whose files are served")
    default_file: str = _field("sample.mp4", "file served at / (relative to media_dir)")
    chunk_size_bytes: int = _field(512 * 1024, "file bytes read per step (sendfile: 2 MiB)")
    max_ranges: int = _field(100, "more ranges than this in one request: Range ignored, 200")
    # --- issue 15 (slice cache): the origin's side of freshness ---
    cache_control: str = _field(
        "", "Cache-Control value of every file answer, e.g. 'public, max-age=3600' ('' = none)"
    )
    # --- end issue 15 ---

    limit_rate_bitrate_factor: float = _field(
        0.0, "pace MP4 and WebM files at this times their average bitrate (0 = off)"
    )

    ROLE = "ORIGIN"

    def validate(self) -> None:
        ServerConfig.validate(self)
        factor = self.limit_rate_bitrate_factor
        if factor != 0 and not (math.isfinite(factor) and 0.1 <= factor <= 100):
            raise ConfigError(f"limit_rate_bitrate_factor must be 0 or 0.1..100, got {factor}")
        if not 1024 <= self.chunk_size_bytes <= 64 * 1024 * 1024:
            raise ConfigError(
                f"chunk_size_bytes must be 1 KiB..64 MiB, got {self.chunk_size_bytes}"
            )
        if self.max_ranges < 1:
            raise ConfigError(f"max_ranges must be >= 1, got {self.max_ranges}")
        # issue 15: written into every file answer's head.
        if any(c in self.cache_control for c in "\r\n\x00") or not self.cache_control.isascii():
            raise ConfigError("cache_control must be one line of ASCII")


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyConfig(ServerConfig):
    """The proxy: relays GET and HEAD to one fixed upstream."""

    port: int = _field(8080, "TCP port to listen on", hypercorn="--bind")
    upstream: str = _field("http://127.0.0.1:9090", "base URL of the one upstream")
    via_name: str = _field("trio-range", "name in the Via header the proxy appends")
    connect_timeout_s: float = _field(5.0, "upstream connect timeout (502 past it)")
    response_timeout_s: float = _field(30.0, "wait for the upstream's response head (504)")
    read_timeout_s: float = _field(60.0, "wait between upstream body chunks (abort past it)")
    pool_size: int = _field(100, "upstream connections kept at most")
    pool_timeout_s: float = _field(10.0, "wait for a free upstream connection (503 past it)")
    trust_upstream_rate: bool = _field(
        False, "pace a response at the upstream's X-Accel-Limit-Rate (always stripped)"
    )
    # --- issue 15: the range-aware slice cache (docs/cache.md); off unless cache_dir is set ---
    cache_dir: str = _field("", "folder of the slice cache ('' = no cache; workers may share it)")
    cache_max_bytes: int = _field(1024**3, "disk bytes the cached slices may use (LRU eviction)")
    slice_size_bytes: int = _field(1024 * 1024, "bytes per cached slice (64 KiB..64 MiB)")
    cache_default_ttl_s: float = _field(
        60.0, "freshness of an answer without max-age, s-maxage or Expires"
    )
    # --- end issue 15 ---
    upstream_keep_alive_s: float = _field(
        4.0, "close an idle upstream connection after this (below the upstream's own timeout)"
    )
    splice: bool = _field(
        True, "move relayed bodies socket to socket with splice(2) (Linux, plain TCP both ways)"
    )

    ROLE = "PROXY"
    # Up to 0.1.0 the proxy had the origin's setting too.
    DEPRECATED = MappingProxyType(
        {"chunk_size_bytes": "has no effect on the proxy (it relays upstream reads as they come)"}
    )

    def validate(self) -> None:
        ServerConfig.validate(self)
        if not self.upstream.startswith(("http://", "https://")):
            raise ConfigError(f"upstream must be an http:// or https:// URL, got {self.upstream}")
        if self.pool_size < 1:
            raise ConfigError(f"pool_size must be >= 1, got {self.pool_size}")
        if self.upstream_keep_alive_s <= 0:
            raise ConfigError(
                f"upstream_keep_alive_s must be > 0, got {self.upstream_keep_alive_s}"
            )
        if not self.via_name or any(c in self.via_name for c in ",\r\n"):
            raise ConfigError("via_name must be a non-empty token without commas or newlines")
        # issue 15: the slice cache.
        if not 64 * 1024 <= self.slice_size_bytes <= 64 * 1024 * 1024:
            raise ConfigError(
                f"slice_size_bytes must be 64 KiB..64 MiB, got {self.slice_size_bytes}"
            )
        if self.cache_max_bytes < 2 * self.slice_size_bytes:
            raise ConfigError(
                "cache_max_bytes must hold at least two slices (2 x slice_size_bytes)"
            )


ConfigT = TypeVar("ConfigT", bound=ServerConfig)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(text: str) -> tuple[Network, ...]:
    """The networks a ``trusted_proxies`` value lists (``"10.0.0.1, 192.168.0.0/16"``)."""
    members = [member.strip() for member in text.split(",") if member.strip()]
    try:
        return tuple(ipaddress.ip_network(member, strict=False) for member in members)
    except ValueError:
        raise ConfigError(
            f"trusted_proxies must list IP addresses or networks, got {text!r}"
        ) from None


def env_name(cls: type[ServerConfig], field_name: str) -> str:
    """The environment variable that sets ``field_name`` of ``cls``."""
    return f"{ENV_PREFIX}{cls.ROLE}_{field_name.upper()}"


def flag_name(field_name: str) -> str:
    """The command-line flag that sets ``field_name``."""
    return "--" + field_name.replace("_", "-")


def type_name(field: dataclasses.Field[Any]) -> str:
    """The name of ``field``'s type: ``"int"``, ``"bool"``, ``"Path"``..."""
    return field.type if isinstance(field.type, str) else field.type.__name__


def convert(field: dataclasses.Field[Any], text: str) -> Any:
    """Turn the text of an environment variable or flag into the field's type."""
    kind = type_name(field)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if kind == "Path":
            return Path(text)
    except ValueError:
        raise ConfigError(f"{field.name}: not a valid {kind}: {text!r}") from None
    return text


def warn_deprecated(cls: type[ServerConfig], name: str, source: str) -> None:
    """Warn that ``source`` (a variable, a flag) sets ``name``, a deprecated setting of ``cls``.

    A log line for whoever runs the server, and a DeprecationWarning for code and test suites.
    """
    message = f"{source} {cls.DEPRECATED[name]}; it is ignored and will be removed"
    log.warning("deprecated setting: %s", message)
    # Attributed to this module, not the caller: Python shows DeprecationWarning when its
    # caller is __main__ (``python -m trio_range.cli``), and the log line has said it already.
    warnings.warn(message, DeprecationWarning, stacklevel=1)


def load(
    cls: type[ConfigT],
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> ConfigT:
    """Build ``cls`` from defaults, then ``environ``, then ``overrides`` (already typed).

    Raises ConfigError for an unknown ``TRIO_RANGE_<ROLE>_*`` variable, an unknown override or
    a value that does not convert or validate. A deprecated setting (``cls.DEPRECATED``) is
    accepted, warned about and ignored.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    prefix = f"{ENV_PREFIX}{cls.ROLE}_"
    for key, text in environ.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name in cls.DEPRECATED:
            warn_deprecated(cls, name, key)
            continue
        if name not in fields:
            raise ConfigError(f"unknown setting {key} (known: {', '.join(sorted(fields))})")
        values[name] = convert(fields[name], text)
    for name, value in (overrides or {}).items():
        if name in cls.DEPRECATED:
            if value is not None:
                warn_deprecated(cls, name, f"setting {name}")
            continue
        if name not in fields:
            raise ConfigError(f"unknown setting {name}")
        if value is not None:
            values[name] = value
    return cls(**values)

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


@dataclasses.dataclass(frozen=True, slots=True)
class OriginConfig(ServerConfig):
    """The origin: serves the files of one media folder."""

    port: int = _field(9090, "TCP port to listen on", hypercorn="--bind")
    media_dir: Path = _field(Path("media"), "folder whose files are served")
    default_file: str = _field("sample.mp4", "file served at / (relative to media_dir)")
    chunk_size_bytes: int = _field(512 * 1024, "file bytes read per step (sendfile: 2 MiB)")
    max_ranges: int = _field(100, "more ranges than this in one request: Range ignored, 200")

    ROLE = "ORIGIN"

    def validate(self) -> None:
        ServerConfig.validate(self)
        if not 1024 <= self.chunk_size_bytes <= 64 * 1024 * 1024:
            raise ConfigError(
                f"chunk_size_bytes must be 1 KiB..64 MiB, got {self.chunk_size_bytes}"
            )
        if self.max_ranges < 1:
            raise ConfigError(f"max_ranges must be >= 1, got {self.max_ranges}")


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


ConfigT = TypeVar("ConfigT", bound=ServerConfig)


def env_name(cls: type[ServerConfig], field_name: str) -> str:
    """The environment variable that sets ``field_name`` of ``cls``."""
    return f"{ENV_PREFIX}{cls.ROLE}_{field_name.upper()}"


def flag_name(field_name: str) -> str:
    """The command-line flag that sets ``field_name``."""
    return "--" + field_name.replace("_", "-")


def serving_loop_settings(cls: type[ServerConfig]) -> dict[str, str]:
    """The settings only ``serve_app`` carries out: name -> Hypercorn flag ("" if none).

    Plain ``hypercorn -k trio`` ignores them; its own flag does the same there.
    """
    return {
        f.name: f.metadata["hypercorn"]
        for f in dataclasses.fields(cls)
        if "hypercorn" in f.metadata
    }


def plain_hypercorn_note(config: ServerConfig) -> str:
    """The start-up line of an app served by plain Hypercorn, not by ``serve_app``.

    It names the settings that do nothing there and what to use instead, and those of them
    that ``config`` sets to no avail.
    """
    settings = serving_loop_settings(type(config))
    by_flag: dict[str, list[str]] = {}
    for name, flag in settings.items():
        by_flag.setdefault(flag, []).append(name)
    instead = [f"{'/'.join(names)} -> {flag}" for flag, names in by_flag.items() if flag]
    # Hypercorn leaves our logger unconfigured: the line names its sender itself.
    sender = " ".join(filter(None, ["trio_range", config.ROLE.lower()]))
    note = (
        f"{sender}: served by plain Hypercorn, not trio-range's serving loop: these settings "
        f"have no effect here, Hypercorn's flags apply instead: {', '.join(instead)}; "
        f"no Hypercorn equivalent: {', '.join(by_flag.get('', []))}"
    )
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    ignored = [
        f"{name}={getattr(config, name)!r}"
        for name in settings
        if getattr(config, name) != defaults[name]
    ]
    if ignored:
        note += f"; set but ignored: {', '.join(ignored)}"
    return note


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

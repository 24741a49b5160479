"""Configuration: checked when built, however built; loaded from environment and flags."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import pytest

from trio_range.config import (
    OriginConfig,
    ProxyConfig,
    ServerConfig,
    load,
)
from trio_range.errors import ConfigError
from trio_range.serving_loop_settings import plain_hypercorn_note, serving_loop_settings

# (class, field, a value that cannot work)
BAD_VALUES: list[tuple[type[ServerConfig], str, Any]] = [
    (ServerConfig, "port", -1),
    (OriginConfig, "port", 65536),
    (ProxyConfig, "port", -1),
    (ServerConfig, "max_connections", 0),
    (ServerConfig, "max_streams", 0),
    (ServerConfig, "backlog", 0),
    (ServerConfig, "max_header_bytes", 1023),
    (ServerConfig, "max_header_bytes", 1024 * 1024 + 1),
    (ServerConfig, "send_stall_timeout_s", 0.5),
    (ServerConfig, "keep_alive_timeout_s", -1.0),
    (ServerConfig, "shutdown_grace_s", math.inf),
    (ServerConfig, "shutdown_grace_s", math.nan),
    (ServerConfig, "stats_path", "stats"),
    (ServerConfig, "metrics_path", "/healthz"),
    (ServerConfig, "stats_token", "has space"),
    (ServerConfig, "stats_backend", "memcached://x"),
    (ServerConfig, "stats_key_prefix", ""),
    (ServerConfig, "stats_push_interval_s", 0.0),
    (OriginConfig, "max_ranges", 0),
    (OriginConfig, "chunk_size_bytes", 1023),
    (OriginConfig, "chunk_size_bytes", 64 * 1024 * 1024 + 1),
    (ProxyConfig, "upstream", "ftp://x"),
    (ProxyConfig, "pool_size", 0),
    (ProxyConfig, "via_name", ""),
    (ProxyConfig, "via_name", "a,b"),
    (ProxyConfig, "connect_timeout_s", -1.0),
    # traffic shaping (issue 16)
    (ServerConfig, "limit_rate_bytes_per_s", -1),
    (ProxyConfig, "limit_rate_bytes_per_s", 2**40 + 1),
    (ServerConfig, "limit_rate_after_bytes", -1),
    (ServerConfig, "max_connections_per_client", -1),
    (ServerConfig, "trusted_proxies", "10.0.0.1, example.com"),
    (ServerConfig, "trusted_proxies", "10.0.0.0/33"),
    (OriginConfig, "limit_rate_bitrate_factor", 0.05),
    (OriginConfig, "limit_rate_bitrate_factor", math.nan),
    (OriginConfig, "limit_rate_bitrate_factor", -1.0),
]


@pytest.mark.parametrize(("cls", "name", "value"), BAD_VALUES)
def test_building_with_a_bad_value_raises_config_error_naming_the_field(
    cls: type[ServerConfig], name: str, value: Any
) -> None:
    with pytest.raises(ConfigError, match=name):
        cls(**{name: value})


@pytest.mark.parametrize(("cls", "name", "value"), BAD_VALUES)
def test_replacing_with_a_bad_value_raises_config_error_naming_the_field(
    cls: type[ServerConfig], name: str, value: Any
) -> None:
    with pytest.raises(ConfigError, match=name):
        dataclasses.replace(cls(), **{name: value})


@pytest.mark.parametrize(("cls", "name", "value"), BAD_VALUES)
def test_loading_a_bad_value_from_the_environment_raises_config_error(
    cls: type[ServerConfig], name: str, value: Any
) -> None:
    if cls is ServerConfig:
        cls = OriginConfig
    with pytest.raises(ConfigError, match=name):
        load(cls, {f"TRIO_RANGE_{cls.ROLE}_{name.upper()}": str(value)})


def test_subclass_checks_run_once_with_their_base_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    base_validate = ServerConfig.validate
    proxy_validate = ProxyConfig.validate

    def counted_base(self: ServerConfig) -> None:
        calls.append("base")
        base_validate(self)

    def counted_proxy(self: ProxyConfig) -> None:
        calls.append("proxy")
        proxy_validate(self)

    monkeypatch.setattr(ServerConfig, "validate", counted_base)
    monkeypatch.setattr(ProxyConfig, "validate", counted_proxy)
    config = ProxyConfig()
    assert calls == ["proxy", "base"]
    calls.clear()
    dataclasses.replace(config, port=0)
    assert calls == ["proxy", "base"]


def test_defaults_are_valid_and_validate_stays_callable() -> None:
    for cls in (ServerConfig, OriginConfig, ProxyConfig):
        cls().validate()


def test_a_config_can_be_replaced_by_several_fields_at_once() -> None:
    # Changes that depend on each other go in one replace: alone, a metrics_path under the
    # default stats_path is refused.
    config = dataclasses.replace(ServerConfig(), stats_path="/s", metrics_path="/stats/m")
    assert (config.stats_path, config.metrics_path) == ("/s", "/stats/m")


def test_chunk_size_is_the_origins_setting_only() -> None:
    assert OriginConfig(chunk_size_bytes=64 * 1024).chunk_size_bytes == 64 * 1024
    assert "chunk_size_bytes" not in {f.name for f in dataclasses.fields(ProxyConfig)}
    assert "chunk_size_bytes" not in {f.name for f in dataclasses.fields(ServerConfig)}


def test_the_proxys_deprecated_chunk_size_variable_is_accepted_ignored_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {"TRIO_RANGE_PROXY_CHUNK_SIZE_BYTES": "65536", "TRIO_RANGE_PROXY_PORT": "0"}
    with pytest.warns(DeprecationWarning, match="no effect on the proxy.*will be removed"):
        config = load(ProxyConfig, environ)
    assert config == ProxyConfig(port=0)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "TRIO_RANGE_PROXY_CHUNK_SIZE_BYTES has no effect on the proxy" in record.getMessage()


def test_the_proxys_deprecated_chunk_size_override_is_accepted_ignored_and_warned_about() -> None:
    with pytest.warns(DeprecationWarning, match="chunk_size_bytes has no effect on the proxy"):
        config = load(ProxyConfig, {}, {"chunk_size_bytes": 65536})
    assert config == ProxyConfig()
    # An override left unset (a flag not given) is no use of the setting.
    assert load(ProxyConfig, {}, {"chunk_size_bytes": None}) == ProxyConfig()


def test_the_origins_chunk_size_variable_is_not_deprecated() -> None:
    config = load(OriginConfig, {"TRIO_RANGE_ORIGIN_CHUNK_SIZE_BYTES": "65536"})
    assert config.chunk_size_bytes == 65536


SERVING_LOOP_SETTINGS = {
    # Read only by server/serving.py's serve_app and hypercorn_config: Hypercorn's own loop
    # listens, queues, times out and shuts down by its own settings.
    "host": "--bind",
    "port": "--bind",
    "keep_alive_timeout_s": "--keep-alive",
    "max_connections": "",
    "backlog": "--backlog",
    "shutdown_grace_s": "--graceful-timeout",
    "send_stall_timeout_s": "",
    # per socket peer where a connection is accepted (behind trusted proxies: per request)
    "max_connections_per_client": "",
}


@pytest.mark.parametrize("cls", [ServerConfig, OriginConfig, ProxyConfig])
def test_serving_loop_settings_map_to_hypercorns_flags(cls: type[ServerConfig]) -> None:
    assert serving_loop_settings(cls) == SERVING_LOOP_SETTINGS


def test_plain_hypercorn_note_names_each_setting_with_its_hypercorn_flag() -> None:
    note = plain_hypercorn_note(ProxyConfig())
    assert note.startswith("trio_range proxy: served by plain Hypercorn")
    assert "host/port -> --bind" in note
    assert "shutdown_grace_s -> --graceful-timeout" in note
    assert (
        "no Hypercorn equivalent: max_connections, send_stall_timeout_s, "
        "max_connections_per_client" in note
    )
    assert "ignored" not in note  # nothing set


def test_plain_hypercorn_note_names_the_settings_set_to_no_avail() -> None:
    # OriginConfig's port default (9090) is not ServerConfig's (0): each class's own counts.
    config = OriginConfig(port=9090, backlog=5, access_log=False, send_stall_timeout_s=60.0)
    note = plain_hypercorn_note(config)
    assert note.endswith("; set but ignored: backlog=5, send_stall_timeout_s=60.0")


def test_trusted_proxies_name_addresses_and_networks() -> None:
    from trio_range.config import trusted_networks

    networks = trusted_networks(" 10.0.0.1, 192.168.0.0/16 ,::1,")
    assert [str(network) for network in networks] == ["10.0.0.1/32", "192.168.0.0/16", "::1/128"]
    assert trusted_networks("") == ()

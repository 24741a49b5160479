"""The ``trio-range`` command: origin, proxy, demo and make-media.

Flags are generated from the configuration dataclasses, so a flag, its environment variable and
its README row cannot drift apart. Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from trio_range.config import (
    OriginConfig,
    ProxyConfig,
    ServerConfig,
    convert,
    env_name,
    flag_name,
    load,
    type_name,
    warn_deprecated,
)
from trio_range.errors import ConfigError, TrioRangeError
from trio_range.server.app import RangeApp
from trio_range.server.serving import serve_app
from trio_range.server.signals import run_until_signalled

log = logging.getLogger("trio_range")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, not a usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_config_flags(
    parser: argparse.ArgumentParser, cls: type[ServerConfig], *, prefix: str = ""
) -> None:
    for field in dataclasses.fields(cls):
        flag = flag_name(prefix + field.name)
        is_bool = type_name(field) == "bool"
        parser.add_argument(
            flag,
            dest=prefix + field.name,
            metavar=field.name.upper(),
            # A bool flag alone means true; a value (--access-log false) still works, as it
            # did before --no-access-log existed.
            nargs="?" if is_bool else None,
            const=True if is_bool else None,
            type=_converter(field),
            default=None,
            help=f"{field.metadata.get('help', '')} "
            f"(default: {field.default}; env {env_name(cls, field.name)})",
        )
        if is_bool:
            parser.add_argument(
                flag_name("no_" + prefix + field.name),
                dest=prefix + field.name,
                action="store_const",
                const=False,
                default=None,
                help=f"same as {flag} false",
            )
    for name, why in cls.DEPRECATED.items():
        parser.add_argument(
            flag_name(prefix + name),
            dest=prefix + name,
            metavar=name.upper(),
            default=None,
            help=f"deprecated: {why}; ignored (env {env_name(cls, name)})",
        )


def _converter(field: dataclasses.Field[Any]) -> Any:
    def parse(text: str) -> Any:
        try:
            return convert(field, text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = str(field.type)
    return parse


def _overrides(
    args: argparse.Namespace, cls: type[ServerConfig], prefix: str = ""
) -> dict[str, Any]:
    for name in cls.DEPRECATED:
        if getattr(args, prefix + name) is not None:
            warn_deprecated(cls, name, flag_name(prefix + name))
    return {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trio-range", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("TRIO_RANGE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (env TRIO_RANGE_LOG_LEVEL)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    origin = commands.add_parser("origin", help="serve the files of a media folder")
    _add_config_flags(origin, OriginConfig)

    proxy = commands.add_parser("proxy", help="relay range requests to one upstream")
    _add_config_flags(proxy, ProxyConfig)

    demo = commands.add_parser("demo", help="origin and proxy in one process, shipped media")
    _add_config_flags(demo, OriginConfig, prefix="origin_")
    _add_config_flags(demo, ProxyConfig, prefix="proxy_")

    commands.add_parser("settings", help="print every setting as a Markdown table")

    make_media = commands.add_parser(
        "make-media", help="write a large deterministic test file (for benchmarks)"
    )
    make_media.add_argument("--size", required=True, help="e.g. 1GiB, 256MiB, 1000000")
    make_media.add_argument("--seed", type=int, default=0)
    make_media.add_argument("path", type=Path)
    return parser


def settings_table() -> str:
    """Every setting of both servers as Markdown rows (the README's configuration table).

    Deprecated settings, still accepted but ignored, come last in their server's rows.
    """
    rows = [
        "| server | flag | environment variable | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for cls, role in ((OriginConfig, "origin"), (ProxyConfig, "proxy")):
        for field in dataclasses.fields(cls):
            default = field.default if field.default != "" else "(empty)"
            flags = f"`{flag_name(field.name)}`"
            if type_name(field) == "bool":
                flags += f" / `{flag_name('no_' + field.name)}`"
            rows.append(
                f"| {role} | {flags} | `{env_name(cls, field.name)}` "
                f"| `{default}` | {field.metadata.get('help', '')} |"
            )
        for name, why in cls.DEPRECATED.items():
            rows.append(
                f"| {role} | `{flag_name(name)}` | `{env_name(cls, name)}` "
                f"| (ignored) | deprecated: {why}; will be removed |"
            )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The upstream client logs every request at INFO; our access log already says it all.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        return _run(args)
    except TrioRangeError as error:
        print(f"trio-range: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "settings":
        print(settings_table())
        return 0
    if args.command == "make-media":
        from trio_range.media_files import parse_size, write_deterministic_file

        write_deterministic_file(args.path, parse_size(args.size), seed=args.seed)
        print(f"wrote {args.path}")
        return 0
    if args.command == "origin":
        _serve_origin(load(OriginConfig, os.environ, _overrides(args, OriginConfig)))
        return 0
    if args.command == "proxy":
        _serve_proxy(load(ProxyConfig, os.environ, _overrides(args, ProxyConfig)))
        return 0
    if args.command == "demo":
        from trio_range.demo import run_demo

        origin_config = load(OriginConfig, os.environ, _overrides(args, OriginConfig, "origin_"))
        proxy_config = load(ProxyConfig, os.environ, _overrides(args, ProxyConfig, "proxy_"))
        trio.run(run_until_signalled, partial(run_demo, origin_config, proxy_config))
        return 0
    raise AssertionError(args.command)


async def _serve_one(app: RangeApp, config: ServerConfig, what: str) -> None:
    async def start(nursery: trio.Nursery, stop: Callable[[], Awaitable[None]]) -> None:
        # serve_app logs the URL ("Running on ..."), once, as Hypercorn's own CLI does.
        await nursery.start(partial(serve_app, shutdown_trigger=stop), app, config)
        log.info("%s", what)

    await run_until_signalled(start)


def _serve_origin(config: OriginConfig) -> None:
    from trio_range.origin.app import create_app

    trio.run(_serve_one, create_app(config), config, f"origin serving {config.media_dir}")


def _serve_proxy(config: ProxyConfig) -> None:
    from trio_range.proxy.app import create_app

    trio.run(_serve_one, create_app(config), config, f"proxy relaying to {config.upstream}")


if __name__ == "__main__":
    sys.exit(main())

"""Quart's URL adapter of a request, bound and matched once per distinct request (issue 13).

Quart binds a new Werkzeug ``MapAdapter`` for every request and matches the path against every
rule again: about 40 Python calls a small request. Routes cannot change once requests are
served (Quart refuses setup methods after the first one), so the adapter of the same scheme,
host, root, method, path and query is the same, and so is its match: both are remembered here.
Only public Quart and Werkzeug API is used; ``_quart_hooks.HOOKED`` lists the two methods whose
behaviour this repeats (``Quart.create_url_adapter``, ``QuartMap.bind_to_request``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from quart import Quart
from quart.wrappers import BaseRequestWebsocket
from werkzeug.routing import MapAdapter


class RememberedRoutes(Quart):
    """A Quart app whose URL adapters (and their matches) are remembered per distinct request."""

    def create_url_adapter(self, request: BaseRequestWebsocket | None) -> MapAdapter | None:
        if request is None and self.config["SERVER_NAME"] is None:
            return None  # Quart's answer for the app context: nothing to bind
        # QuartMap.bind_to_request without a SERVER_NAME, subdomain or host matching: the host
        # is compared with itself, so the subdomain is always "" (two host reads, two splits).
        if (
            request is None
            or self.subdomain_matching
            or self.url_map.host_matching
            or self.url_map.default_subdomain
            or self.config["SERVER_NAME"] is not None
        ):
            return super().create_url_adapter(request)
        scheme = request.scheme
        # The adapter of the same scheme, host, root, method, path and query is the same, and
        # so is its match: both are remembered (routes cannot change once requests are served:
        # Quart refuses setup methods after the first one). About 40 Python calls a request.
        # Remembered by the Host field as received (the scope's, from which Quart builds the
        # request's headers), so a request seen before needs no validated ``request.host``
        # (Werkzeug's get_host, about 7 calls): the same field validates the same way.
        field = None
        for name, value in request.scope.get("headers", ()):
            if name == b"host":
                field = value
                break
        root, method, path, query = (
            request.root_path,
            request.method,
            request.path,
            request.query_string,
        )
        if field is not None:
            adapter = self._adapters.get((scheme, field, root, method, path, query))
            if adapter is not None:
                return adapter
        host = request.host.lower()
        # Quart's _normalise_host: no default port in the name matched against routes.
        if scheme in _PORT_80_SCHEMES and host.endswith(":80"):
            host = host[:-3]
        elif scheme in _PORT_443_SCHEMES and host.endswith(":443"):
            host = host[:-4]
        key = (scheme, host if field is None else field, root, method, path, query)
        adapter = self._adapters.get(key)
        if adapter is None:
            bound = self.url_map.bind(host, root, "", scheme, method, path, query.decode())
            adapter = _RememberingAdapter(
                bound.map,
                bound.server_name,
                bound.script_name,
                bound.subdomain,
                bound.url_scheme,
                bound.path_info,
                bound.default_method,
                bound.query_args,
            )
            if len(self._adapters) >= MAX_REMEMBERED_ADAPTERS:
                self._adapters.clear()
            self._adapters[key] = adapter
        return adapter

    @functools.cached_property
    def _adapters(self) -> dict[tuple[object, ...], MapAdapter]:
        return {}


# Distinct requests (scheme, host, path, query) whose URL adapter is remembered; past it the
# memory starts over (a crawl of many distinct paths binds each once, as without it).
MAX_REMEMBERED_ADAPTERS = 1024


class _RememberingAdapter(MapAdapter):
    """A ``MapAdapter`` that matches its own request once: later calls return that match.

    Only the call Quart makes (``match(return_rule=True)``, the bound path and method) is
    remembered, and only a success: a redirect, 404 or 405 is raised again each time, as
    Werkzeug raises it. Each caller gets its own copy of the view arguments.
    """

    _found: tuple[Any, Mapping[str, Any]] | None = None

    def match(
        self,
        path_info: str | None = None,
        method: str | None = None,
        return_rule: bool = False,
        query_args: Mapping[str, Any] | str | None = None,
        websocket: bool | None = None,
    ) -> tuple[Any, Mapping[str, Any]]:
        if (
            not return_rule
            or path_info is not None
            or method is not None
            or query_args is not None
            or websocket is not None
        ):
            matched: tuple[Any, Mapping[str, Any]] = super().match(  # type: ignore[call-overload]
                path_info, method, return_rule, query_args, websocket
            )
            return matched
        found = self._found
        if found is None:
            found = self._found = super().match(return_rule=True)
        return found[0], dict(found[1])


_PORT_80_SCHEMES = frozenset({"http", "ws"})
_PORT_443_SCHEMES = frozenset({"https", "wss"})

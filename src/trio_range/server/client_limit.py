"""The per-client limit for requests that come through a trusted proxy (issue 16).

``max_connections_per_client`` is enforced where a connection is accepted (registry.py): the
socket's peer is the client. A trusted proxy (``trusted_proxies``) is one peer for many
clients, and pools its connections: behind it, who the client is shows only in the request's
X-Forwarded-For, known after the head is parsed. So requests from a trusted proxy are counted
here instead, per the client X-Forwarded-For names (:func:`~trio_range.http.forwarding.
forwarded_client`), in flight at once; past the limit the request gets the same 503 with
Retry-After as a connection over the limit. Nobody else can choose the name they are counted
under: X-Forwarded-For is believed only from a trusted peer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trio_range.config import ServerConfig, trusted_networks
from trio_range.http.forwarding import forwarded_client, is_trusted
from trio_range.server.exchange import Exchange


class ForwardedClientLimit:
    """Requests in flight per client, for requests whose peer is a trusted proxy."""

    def __init__(self, config: ServerConfig) -> None:
        self.limit = config.max_connections_per_client
        self.trusted = trusted_networks(config.trusted_proxies)
        self.in_flight: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return bool(self.limit and self.trusted)

    def admit(self, scope: Mapping[str, Any], exchange: Exchange) -> str | None:
        """None if the request may go on (counted until ``exchange`` ends), else its client."""
        peer = (scope.get("client") or ("",))[0]
        if not self.active or not is_trusted(peer, self.trusted):
            return None  # limited per connection when it was accepted, if at all
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]]
        client = forwarded_client(peer, headers, self.trusted)
        count = self.in_flight.get(client, 0)
        if count >= self.limit:
            return client
        self.in_flight[client] = count + 1
        exchange.resources.callback(self._release, client)
        return None

    def _release(self, client: str) -> None:
        left = self.in_flight.pop(client) - 1
        if left:
            self.in_flight[client] = left

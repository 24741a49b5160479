"""The streaming range proxy: GET and HEAD relayed to one fixed upstream.

``hypercorn -k trio 'trio_range.proxy:create_app()'`` serves it (configured from
``TRIO_RANGE_PROXY_*`` environment variables).
"""

from trio_range.proxy.app import create_app

__all__ = ["create_app"]

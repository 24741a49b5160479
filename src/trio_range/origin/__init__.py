"""The origin server: the files of one media folder, with complete RFC 9110 range support.

``hypercorn -k trio 'trio_range.origin:create_app()'`` serves it (configured from
``TRIO_RANGE_ORIGIN_*`` environment variables).
"""

from trio_range.origin.app import create_app

__all__ = ["create_app"]

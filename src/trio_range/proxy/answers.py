"""The type of the proxy's answers whose fields are complete: Via and Date already among them.

The app's after-request hook (proxy/app.py) adds Via and Date to the proxy's own answers
(errors, /stats, /healthz): RFC 9110 asks for Via on every answer and a Date from an origin
server or a cache. A relayed answer (relay.py) and a cache hit (cache/serve.py) carry both
already, and a Werkzeug lookup costs ~5 Python calls a name (a missing one raises and catches a
KeyError). Their type tells the hook to leave them alone: one ``type() is`` test.
"""

from __future__ import annotations

from trio_range.server.common import FieldsResponse


class CompleteAnswer(FieldsResponse):
    """An answer whose fields are exactly the proxy's, Via and Date included.

    No Content-Length of Quart's either: ``Response`` would add one to a body of bytes (the
    fields carry the right one, or none for a chunked relay).
    """

    automatically_set_content_length = False

"""What to answer to a GET/HEAD of a file: status, header fields and body segments.

The pure half of Go's ``serveContent``: preconditions (412/304), then If-Range, then the Range
policy, then the framing. The server stats the file, calls :func:`plan_response`, writes the
headers, and copies each :class:`ByteRange` of the body from the file (nothing for HEAD).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trio_range.http.conditional import (
    ConditionalRequest,
    Precondition,
    Validators,
    evaluate_preconditions,
    if_range_allows_range,
)
from trio_range.http.grammar import has_forbidden_field_chars
from trio_range.http.multipart import MultipartByteranges, new_boundary, segment_length
from trio_range.http.ranges import (
    DEFAULT_LIMITS,
    ByteRange,
    RangeDecision,
    RangeLimits,
    RangeOutcome,
    decide_ranges,
    unsatisfied_content_range,
)

__all__ = ["Representation", "ResponsePlan", "plan_response", "range_outcome_label"]


@dataclass(frozen=True, slots=True)
class Representation:
    """The selected representation: its size in bytes, media type and validators."""

    size: int
    content_type: str
    validators: Validators

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"negative size {self.size}")
        for value in (self.content_type, self.validators.etag or ""):
            # Field values must not forge header lines, and must fit HTTP/1.1's latin-1 bytes.
            if has_forbidden_field_chars(value):
                raise ValueError(f"CR, LF or NUL in field value {value!r}")
            value.encode("latin-1")


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """A response to carry out: copy each ByteRange of ``body`` from the file, send bytes as is.

    ``reason`` explains the range outcome for log lines.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: tuple[bytes | ByteRange, ...]
    range_outcome: RangeOutcome
    if_range_failed: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        for key, announced in self.headers:
            # "Content-Length" as the plans spell it, else any spelling: the 9th letter first
            # (not Content-Type's or Content-Range's), a lower() only then (issue 13).
            if key == "Content-Length" or (key[8:9] in "Ll" and key.lower() == "content-length"):
                if int(announced) != self.content_length:
                    raise ValueError(
                        f"Content-Length {announced} but the body is {self.content_length}"
                    )
                return

    @property
    def content_length(self) -> int:
        """Bytes of the body, summed over the same segments the server writes."""
        total = 0
        for segment in self.body:  # a loop, not sum() of a generator: 3 calls fewer
            total += segment_length(segment)
        return total

    def header(self, name: str) -> str | None:
        """The value of the field ``name`` (case-insensitive), or None when absent."""
        wanted = name.lower()
        firsts = (wanted[:1], wanted[:1].upper())
        for key, value in self.headers:
            # The first letter first: a call to lower() only for a likely match (issue 13).
            if key[:1] in firsts and key.lower() == wanted:
                return value
        return None


def _with_content_length(plan: ResponsePlan) -> ResponsePlan:
    # The header is derived from the plan's own property, so it cannot disagree with the body.
    headers = (*plan.headers, ("Content-Length", str(plan.content_length)))
    # Built field by field: dataclasses.replace introspects the fields on every call (10 of
    # a small range request's Python calls, issue 13).
    return ResponsePlan(
        plan.status, headers, plan.body, plan.range_outcome, plan.if_range_failed, plan.reason
    )


def _validator_fields(v: Validators) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    if v.etag is not None:
        fields.append(("ETag", v.etag))
    last_modified = v.last_modified_http_date()
    if last_modified is not None:
        fields.append(("Last-Modified", last_modified))
    return fields


def _not_modified(v: Validators) -> ResponsePlan:
    # RFC 9110 §15.4.5: "The server generating a 304 response MUST generate any of the
    # following header fields that would have been sent in a 200 (OK) response to the same
    # request: ... ETag ..." and "a sender SHOULD NOT generate representation metadata other
    # than the above listed fields unless said metadata exists for the purpose of guiding cache
    # updates (e.g., Last-Modified might be useful if the response does not have an ETag
    # field)." So Last-Modified only without an ETag, and no Content-Length (it would announce
    # the length of a body that is not sent).
    fields = _validator_fields(v)
    if v.etag is not None:
        fields = [field for field in fields if field[0] != "Last-Modified"]
    return ResponsePlan(304, tuple(fields), (), RangeOutcome.NONE, reason="not modified")


def plan_response(
    req: ConditionalRequest,
    range_header: str | None,
    range_query: str | None,
    rep: Representation,
    limits: RangeLimits = DEFAULT_LIMITS,
    boundary_factory: Callable[[], str] = new_boundary,
) -> ResponsePlan:
    """Plan the answer to ``req`` for ``rep``; never raises for any header text.

    ``range_header`` is the Range field value and ``range_query`` the ``?range=`` value, None
    when absent. For HEAD the server sends the planned headers and no body: RFC 9110 §9.3.2,
    "The server SHOULD send the same header fields in response to a HEAD request as it would
    have sent if the request method had been GET".
    """
    v = rep.validators
    common = [("Accept-Ranges", "bytes"), *_validator_fields(v)]
    range_asked = range_header is not None or range_query is not None

    precondition = evaluate_preconditions(req, v)
    if precondition is Precondition.NOT_MODIFIED:
        return _not_modified(v)
    if precondition is Precondition.FAILED:
        return _with_content_length(
            ResponsePlan(412, tuple(common), (), RangeOutcome.NONE, reason="precondition failed")
        )

    def whole(outcome: RangeOutcome, reason: str, *, if_range_failed: bool = False) -> ResponsePlan:
        body: tuple[bytes | ByteRange, ...] = (ByteRange(0, rep.size),) if rep.size else ()
        headers = (*common, ("Content-Type", rep.content_type))
        plan = ResponsePlan(200, headers, body, outcome, if_range_failed, reason)
        return _with_content_length(plan)

    if not range_asked:
        return whole(RangeOutcome.NONE, "no range requested")
    if not req.is_get_or_head:
        # RFC 9110 §14.2: "A server MUST ignore a Range header field received with a request
        # method that is unrecognized or for which range handling is not defined."
        return whole(RangeOutcome.IGNORED, f"Range ignored on {req.method[:20]}")
    # RFC 9110 §13.1.5: "A server MUST ignore an If-Range header field received in a request
    # that does not contain a Range header field" (here: no range asked at all), and "if the
    # validator does not match, the server MUST ignore the Range header field".
    if not if_range_allows_range(req.if_range, v):
        return whole(RangeOutcome.IGNORED, "If-Range does not match", if_range_failed=True)

    decision: RangeDecision = decide_ranges(range_header, range_query, rep.size, limits)
    if decision.outcome in (RangeOutcome.UNSATISFIABLE, RangeOutcome.CONFLICT):
        # RFC 9110 §15.5.17: "A server that generates a 416 response to a byte-range request
        # SHOULD generate a Content-Range header field specifying the current length of the
        # selected representation".
        headers = (*common, ("Content-Range", unsatisfied_content_range(rep.size)))
        plan = ResponsePlan(416, headers, (), decision.outcome, reason=decision.reason)
        return _with_content_length(plan)
    if decision.outcome is not RangeOutcome.PARTIAL:
        return whole(decision.outcome, decision.reason)
    if len(decision.ranges) == 1:
        # RFC 9110 §14.6: "A server MUST NOT generate a multipart response to a request for a
        # single range".
        (only,) = decision.ranges
        headers = (
            *common,
            ("Content-Type", rep.content_type),
            ("Content-Range", only.content_range(rep.size)),
        )
        plan = ResponsePlan(206, headers, (only,), decision.outcome, reason=decision.reason)
        return _with_content_length(plan)
    multipart = MultipartByteranges(boundary_factory(), rep.content_type, rep.size, decision.ranges)
    headers = (*common, ("Content-Type", multipart.content_type_header))
    body = tuple(multipart.segments())
    plan = ResponsePlan(206, headers, body, decision.outcome, reason=decision.reason)
    return _with_content_length(plan)


def range_outcome_label(plan: ResponsePlan) -> str:
    """How the plan treated the Range, in the words of the statistics."""
    outcome = plan.range_outcome
    if outcome is RangeOutcome.PARTIAL:
        if len(plan.body) == 1:
            return "single"  # one range goes out as one segment, no multipart framing
        parts = sum(isinstance(segment, ByteRange) for segment in plan.body)
        return "multi" if parts > 1 else "single"
    if outcome in (RangeOutcome.UNSATISFIABLE, RangeOutcome.CONFLICT):
        return "unsatisfiable"
    if outcome is RangeOutcome.IGNORED:
        return "ignored"
    return "none"

"""The response format from the request's Accept header (RFC 9110 content negotiation): the media type the
client prefers most (highest q, then the most specific range that names it, then the service's order: JSON
first), among those the service produces (service/protocol.py MEDIA_TYPES). No Accept, or */*, is JSON."""

from __future__ import annotations

from service.errors import NotAcceptable
from service.protocol import MEDIA_TYPES, ResponseFormat


def _ranges(accept: str) -> list[tuple[str, float]]:
    """Each media range of the header, lower-cased, with its q (a malformed q counts as 0: not wanted)."""
    ranges = []
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        if not media:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        ranges.append((media.lower(), quality))
    return ranges


def _specificity(media_range: str, media_type: str) -> int | None:
    """2 when the range names the type, 1 for its type/*, 0 for */*, None when it does not match."""
    if media_range == media_type:
        return 2
    if media_range == media_type.split("/")[0] + "/*":
        return 1
    return 0 if media_range == "*/*" else None


def negotiate(accept: str | None) -> ResponseFormat:
    """The format for this Accept header; raises NotAcceptable."""
    if accept is None or not accept.strip():
        return ResponseFormat.JSON
    ranges = _ranges(accept)
    best: tuple[float, int, int] | None = None
    for order, media_type in enumerate(MEDIA_TYPES):
        matches = [(s, q) for r, q in ranges if (s := _specificity(r, media_type)) is not None]
        if not matches:
            continue
        specificity, quality = max(matches)  # the most specific range that matches decides its q
        if quality > 0 and (best is None or (quality, specificity, -order) > best):
            best = (quality, specificity, -order)
    if best is None:
        raise NotAcceptable(
            f"found Accept: {accept[:200]!r}; expected one of: {', '.join(MEDIA_TYPES)} (or */*, which "
            "is JSON)"
        )
    return ResponseFormat(-best[2])

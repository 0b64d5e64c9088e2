"""RTMP destinations: which URLs are accepted, and how they appear in events and logs.

An ingest URL usually carries a secret stream key as its last path segment
(rtmp://a.rtmp.youtube.com/live2/<key>), so events and logs only ever show it redacted.
"""

import re
from urllib.parse import urlsplit

SCHEMES = ("rtmp", "rtmps")
# Host names, IPv4 and bracketed IPv6 literals; no user info, no spaces.
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_PATH = re.compile(r"/[\x21-\x7e]*")


class InvalidDestination(ValueError):
    """The URL is not an acceptable RTMP(S) destination; the message says why."""


def validate(url: object, max_length: int) -> str:
    """The URL if it is an rtmp:// or rtmps:// URL with a host and an app path."""
    if not isinstance(url, str) or not url:
        raise InvalidDestination("url is required")
    if len(url) > max_length:
        raise InvalidDestination(f"url is longer than {max_length} characters")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in url):
        raise InvalidDestination("url has spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidDestination(f"url does not parse: {exc}") from exc
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidDestination("url must start with rtmp:// or rtmps://")
    if "@" in parts.netloc:
        raise InvalidDestination("url must not carry user info")
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if not _HOST.fullmatch(host):
        raise InvalidDestination("url has no valid host")
    if not _PATH.fullmatch(parts.path or "") or len(parts.path.strip("/")) == 0:
        raise InvalidDestination("url needs an application path, e.g. /live/<stream key>")
    return url


def redact(url: str) -> str:
    """scheme://host[:port]/app/*** — never the stream key or a query string."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    shown = segments[:-1] if len(segments) > 1 else segments
    tail = "/***" if len(segments) > 1 or parts.query else ""
    return f"{parts.scheme}://{parts.netloc}/{'/'.join(shown)}{tail}"

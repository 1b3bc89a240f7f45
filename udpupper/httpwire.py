"""HTTP/1.1 requests and answers as :mod:`udpupper.scrape` reads and writes
them: a request's head parsed whole (no body is ever read), an answer
written whole, and basic authentication's credentials."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from twisted.internet import defer

MAX_HEAD = 8192  # bytes of a request line and its headers
MAX_FIELDS = 32  # query parameters

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """What a handler is told of a request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case; repeated ones joined by ", "


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)

    def head(self, keep_alive: bool) -> bytes:
        """The status line and headers, and the blank line after them."""
        lines = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def text(status: int, message: str) -> Response:
    """A plain-text answer of one line."""
    return Response(status, f"{message}\n".encode())


Handler = Callable[[Request], "Response | defer.Deferred[Response]"]
Check = Callable[[str, str], bool]  # (user, password) -> may they?


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[Request, bool]:
    """The request in ``head`` (its line and headers, without the blank line
    that ends them), and whether the connection stays open after it."""
    try:
        lines = head.decode("latin-1").split("\r\n")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise BadRequest(400, "not a request") from None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "not an HTTP/1.x request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest(400, "a malformed header")
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query_text = target.partition("?")
    try:
        query = parse_qs(
            query_text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict"
        )
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, f"a query of at most {MAX_FIELDS} fields, in UTF-8") from None
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return Request(method, path, query, headers), keep_alive


def has_body(headers: dict[str, str]) -> bool:
    if "transfer-encoding" in headers:
        return True
    length = headers.get("content-length", "0").strip()
    return not (length.isascii() and length.isdigit() and int(length) == 0)


def credentials(headers: dict[str, str]) -> tuple[str, str] | None:
    """The user and password of a basic ``Authorization`` header, if any."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = (
            base64.b64decode(token.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if colon else None

"""multipart/related (RFC 2046) for DICOMweb: an incremental reader and a writer.

WADO-RS answers a series as one multipart/related body. ``MultipartReader`` is fed the body in
whatever chunks the network gives and hands each part over the moment its closing delimiter
arrives, so the first slices reach the viewer while the rest is still on the wire. A part may
straddle any number of chunks; the preamble and epilogue are skipped. A part's Content-Length,
when the server sends one (Orthanc does), is trusted only if the delimiter sits right after it,
else the body is searched for the delimiter. Each byte is scanned at most about once.
``encode`` builds a STOW-RS request body. No network and no Qt here.
"""
from __future__ import annotations

import re
import uuid
from typing import Callable, Iterable

MAX_HEADER_BYTES = 64 * 1024  # a part's header block; longer is not a DICOMweb answer


class MultipartError(ValueError):
    """The body is not the multipart/related it claims to be (or ended before its closing delimiter)."""


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type header; MultipartError when there is none."""
    if not content_type or not content_type.strip().lower().startswith("multipart/"):
        raise MultipartError(f"not a multipart answer (Content-Type {content_type or 'missing'!r})")
    match = re.search(r';\s*boundary\s*=\s*("([^"]*)"|[^;\s]+)', content_type, flags=re.IGNORECASE)
    if not match:
        raise MultipartError(f"multipart answer without a boundary (Content-Type {content_type!r})")
    boundary = match.group(2) if match.group(2) is not None else match.group(1)
    if not 0 < len(boundary) <= 200:
        raise MultipartError("multipart boundary is empty or too long")
    return boundary


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise MultipartError(f"malformed part header line {line[:60]!r}")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _EPILOGUE = range(5)


class MultipartReader:
    """Feed it the body with ``feed(chunk)``; ``on_part(body, headers)`` fires once per complete part
    (headers: lower-case names). ``close()`` at the end of the stream raises MultipartError if the
    closing delimiter never came (a dropped connection looks exactly like that)."""

    def __init__(self, boundary: str | bytes, on_part: Callable[[bytes, dict[str, str]], None]):
        b = boundary.encode("latin-1") if isinstance(boundary, str) else bytes(boundary)
        self.delimiter = b"\r\n--" + b
        self.on_part = on_part
        self.parts = 0
        # A CRLF in front lets the first boundary (which may open the body) match the same delimiter.
        self._buf = bytearray(b"\r\n")
        self._state = _PREAMBLE
        self._scan = 0  # where the next delimiter search starts (bytes before it were searched)
        self._headers: dict[str, str] = {}
        self._length: int | None = None

    @property
    def complete(self) -> bool:
        """The closing delimiter has been seen."""
        return self._state == _EPILOGUE

    def feed(self, data: bytes) -> None:
        if self._state == _EPILOGUE or not data:
            return
        self._buf += data
        self._run()

    def close(self) -> None:
        if self._state != _EPILOGUE:
            where = "inside a part" if self._state in (_HEADERS, _BODY) else "before the closing delimiter"
            raise MultipartError(f"multipart body ended {where} after {self.parts} complete parts")

    # -- the state machine -----------------------------------------------------------
    def _find_delimiter(self) -> int:
        buf, delim = self._buf, self.delimiter
        at = buf.find(delim, self._scan)
        if at < 0:
            self._scan = max(0, len(buf) - len(delim) + 1)
        return at

    def _run(self) -> None:
        buf, delim = self._buf, self.delimiter
        while True:
            if self._state == _PREAMBLE:
                at = self._find_delimiter()
                if at < 0:
                    # keep only a possible delimiter prefix of the preamble
                    keep = len(delim) - 1
                    if len(buf) > keep:
                        del buf[:len(buf) - keep]
                        self._scan = 0
                    return
                del buf[:at + len(delim)]
                self._scan = 0
                self._state = _AFTER_DELIMITER
            elif self._state == _AFTER_DELIMITER:
                # "--" closes the body; otherwise optional transport padding, then CRLF
                if len(buf) < 2:
                    return
                if buf[:2] == b"--":
                    self._state = _EPILOGUE
                    buf.clear()
                    return
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise MultipartError("garbage after a multipart boundary")
                    return
                if buf[:end].strip(b" \t"):
                    raise MultipartError("garbage after a multipart boundary")
                del buf[:end + 2]
                self._state = _HEADERS
            elif self._state == _HEADERS:
                if buf[:2] == b"\r\n":  # a part without headers
                    head_end, block = 2, b""
                else:
                    at = buf.find(b"\r\n\r\n")
                    if at < 0:
                        if len(buf) > MAX_HEADER_BYTES:
                            raise MultipartError("a part's headers are too long")
                        return
                    head_end, block = at + 4, bytes(buf[:at])
                self._headers = _parse_headers(block)
                try:
                    self._length = int(self._headers["content-length"])
                    if self._length < 0:
                        self._length = None
                except (KeyError, ValueError):
                    self._length = None
                del buf[:head_end]
                self._scan = 0
                self._state = _BODY
            elif self._state == _BODY:
                n = self._length
                if n is not None:
                    if len(buf) < n + len(delim):
                        return  # the part is not all here yet: no need to look
                    if buf[n:n + len(delim)] == delim:
                        at = n
                    else:  # the declared length is wrong: find the delimiter instead
                        self._length = None
                        continue
                else:
                    at = self._find_delimiter()
                    if at < 0:
                        return
                with memoryview(buf) as view:  # one copy, not two (a bytearray slice would copy first)
                    body = bytes(view[:at])
                del buf[:at + len(delim)]
                self._scan = 0
                self._state = _AFTER_DELIMITER
                self.parts += 1
                self.on_part(body, self._headers)
            else:
                buf.clear()
                return


def encode(parts: Iterable[bytes], part_type: str = "application/dicom",
           boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/related body of ``parts`` and its Content-Type header value."""
    boundary = boundary or uuid.uuid4().hex
    pieces = []
    for data in parts:
        pieces.append(f"--{boundary}\r\nContent-Type: {part_type}\r\nContent-Length: {len(data)}\r\n\r\n"
                      .encode("latin-1"))
        pieces.append(data)
        pieces.append(b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(pieces), f'multipart/related; type="{part_type}"; boundary={boundary}'

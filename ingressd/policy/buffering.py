"""proxy-request-buffering, client-body-buffer-size, proxy-buffering,
proxy-buffers-number, proxy-busy-buffers-size, proxy-max-temp-file-size:
their values, as ingress-nginx v1.15.1 validates them
(``internal/ingress/annotations/proxy/main.go``,
``annotations/clientbodybuffersize/main.go``: ``on``/``off``, nginx sizes,
whole numbers), with ingressd's bounds on top, since each size is memory held
per request. What each means for ingressd is in README ("Buffering").
"""

from __future__ import annotations

from typing import Final


class NotApplied(ValueError):
    """A valid value ingressd does not honour: reported as not supported."""


_UNITS: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: str) -> int:
    """An nginx size: bytes, or a whole number with k, m or g (any case)."""
    v = value.strip()
    number, unit = (v[:-1], v[-1].lower()) if v[-1:].isalpha() else (v, "")
    if not (number.isascii() and number.isdigit()) or unit not in _UNITS or len(number) > 15:
        raise ValueError(f"{value!r} is not a size like 8k, 1m or 1g")
    return int(number) * _UNITS[unit]


# A buffered request body's memory part (nginx's client_body_buffer_size): per
# request, so bounded; the rest of a body goes to a temporary file.
MAX_BODY_BUFFER: Final = 16 * 1024 * 1024
# proxy-buffers-number: with proxy-buffer-size (at most 1m) the read-ahead held
# per response; 64 x 1m is the most one response may hold.
MAX_BUFFERS: Final = 64


def parse_on_off_option(value: str) -> bool:
    """``on`` or ``off`` (ingress-nginx: ValidateOptions(on, off), case-sensitive, trimmed)."""
    v = value.strip()
    if v not in ("on", "off"):
        raise ValueError(f'expected "on" or "off", got {value!r}')
    return v == "on"


def parse_body_buffer_size(value: str) -> int:
    """client-body-buffer-size: an nginx size from 1 byte to 16m."""
    size = parse_size(value)
    if not 0 < size <= MAX_BODY_BUFFER:
        raise ValueError(f"{value!r} is not a size from 1 byte to 16m")
    return size


def parse_buffers_number(value: str) -> int:
    """proxy-buffers-number: a whole number from 1 to 64."""
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or not 0 < int(v) <= MAX_BUFFERS:
        raise ValueError(f"{value!r} is not a whole number from 1 to {MAX_BUFFERS}")
    return int(v)


def parse_busy_size(value: str) -> int:
    """proxy-busy-buffers-size: an nginx size from 1 byte (checked against the
    buffers by ``check_busy``)."""
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"{value!r} is not a size of at least 1 byte")
    return size


def parse_max_temp_file_size(value: str) -> int:
    """proxy-max-temp-file-size: ingressd never writes a response to disk, which
    is nginx's behaviour with ``0`` only; any other size is refused (reported),
    rather than accepted as if honoured."""
    size = parse_size(value)
    if size:
        raise NotApplied(
            "ingressd never writes upstream responses to a temporary file: with "
            "proxy-buffering on it reads ahead only into the memory buffers "
            "(proxy-buffers-number x proxy-buffer-size), as nginx with 0; not applied"
        )
    return 0


def check_busy(busy: int, number: int, size: int) -> str | None:
    """nginx's checks of proxy_busy_buffers_size (ngx_http_proxy_merge_loc_conf;
    nginx refuses to start otherwise): at least one buffer, and less than all
    the buffers but one. None when it passes, else why not."""
    if busy < size:
        return f"it must be at least proxy-buffer-size ({size} bytes)"
    if busy > (number - 1) * size:
        return (
            f"it must be less than the size of all the buffers minus one ({number} x {size} bytes)"
        )
    return None

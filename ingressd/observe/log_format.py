"""The ConfigMap's ``log-format-upstream``: an access-log line made of nginx variables.

The format is split once, when the ConfigMap is read (model/log_format.py), into
literal text and variables, each checked against those rendered here: a variable
ingressd does not render makes the key invalid (reported; the default line is
used), never an empty field. The escaping of values is nginx's ``log_format``
``escape=`` (``log-format-escape-json``, ``log-format-escape-none``; json wins,
as nginx.tmpl writes it). Only a custom format pays for any of this: the
default lines (observe/access_log.py) are untouched.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..model.log_format import KNOWN, LogFormat
from .exchange_view import Exchange


@dataclass(slots=True)
class Line:
    """What one access-log line is made of (AccessLog.write's arguments)."""

    ex: Exchange
    status: int
    duration: float
    upstream: float | None
    bytes_in: int
    ingress: str
    backend: str
    now: float


def _header(ex: Exchange, lname: bytes) -> str | None:
    for name, value in ex.headers:
        if name.lower() == lname:
            return value.decode("latin-1")
    return None


def _remote_user(line: Line) -> str | None:
    """nginx's $remote_user: the user of a Basic Authorization header, checked or not."""
    auth = _header(line.ex, b"authorization")
    if auth is None or auth[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[0] or None


def _upstream(line: Line) -> bool:
    return line.ex.forward is not None and bool(line.ex.up_start)


def _up_addr(line: Line) -> str | None:
    fwd = line.ex.forward
    return str(fwd.endpoint) if fwd is not None and line.ex.up_start else None


def _seconds(value: float | None) -> str | None:
    return None if value is None else "%.3f" % value  # noqa: UP031


def _service(line: Line) -> tuple[str, str, str]:
    """(namespace, service, port) of a backend named "namespace/service:port"."""
    ns, _, rest = line.backend.partition("/")
    service, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    return ns, service, port


def _path(line: Line) -> str:
    return line.ex.url.partition(b"?")[0].decode("latin-1")


def _query(line: Line) -> str:
    return line.ex.url.partition(b"?")[2].decode("latin-1")


def _time_local(line: Line) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(line.now))


def _time_iso(line: Line) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(line.now))


def _request(line: Line) -> str:
    ex = line.ex
    return f"{ex.method.decode('latin-1')} {ex.url.decode('latin-1')} {ex.protocol}"


def _req_id(line: Line) -> str | None:
    rid = line.ex.request_id
    return rid.decode("latin-1") if rid else None


# How each variable model/log_format.py KNOWN lists renders (None: nginx's "-").
VARIABLES: dict[str, Callable[[Line], str | None]] = {
    "remote_addr": lambda line: line.ex.real_ip(),
    "the_real_ip": lambda line: line.ex.real_ip(),
    "remote_user": _remote_user,
    "time_local": _time_local,
    "time_iso8601": _time_iso,
    "msec": lambda line: "%.3f" % line.now,  # noqa: UP031
    "request": _request,
    "request_method": lambda line: line.ex.method.decode("latin-1"),
    "request_uri": lambda line: line.ex.url.decode("latin-1"),
    "uri": _path,
    "args": _query,
    "query_string": _query,
    "server_protocol": lambda line: line.ex.protocol,
    "host": lambda line: (line.ex.host or b"").decode("latin-1").partition(":")[0] or None,
    "status": lambda line: str(line.status),
    "bytes_sent": lambda line: str(line.ex.sent),
    "body_bytes_sent": lambda line: str(line.ex.sent),
    "request_length": lambda line: str(line.bytes_in),
    "request_time": lambda line: "%.3f" % line.duration,  # noqa: UP031
    "upstream_addr": _up_addr,
    "upstream_status": lambda line: str(line.status) if _upstream(line) else None,
    "upstream_response_time": lambda line: _seconds(line.upstream) if _upstream(line) else None,
    "upstream_connect_time": lambda line: _seconds(line.ex.up_connect) if _upstream(line) else None,
    "upstream_response_length": lambda line: str(line.ex.sent) if _upstream(line) else None,
    "req_id": _req_id,
    "request_id": _req_id,
    "proxy_upstream_name": lambda line: line.backend or None,
    "proxy_alternative_upstream_name": lambda line: "",
    "namespace": lambda line: line.ingress.partition("/")[0] or None,
    "ingress_name": lambda line: line.ingress.partition("/")[2] or None,
    "service_name": lambda line: _service(line)[1] or None,
    "service_port": lambda line: _service(line)[2] or None,
}


def render(fmt: LogFormat, line: Line) -> str:
    """One line (with its newline) of ``fmt`` for ``line``."""
    parts = fmt.parts
    out = [parts[0]]
    escape = _ESCAPERS[fmt.escape]
    json = fmt.escape == "json"
    for i in range(1, len(parts), 2):
        value = _value(parts[i], line)
        if value is None:
            out.append("" if json else "-")
        else:
            out.append(escape(value))
        out.append(parts[i + 1])
    out.append("\n")
    return "".join(out)


def _value(name: str, line: Line) -> str | None:
    get = VARIABLES.get(name)
    if get is not None:
        return get(line)
    return _header(line.ex, name[5:].replace("_", "-").lower().encode())  # $http_NAME


def _escape_default(value: str) -> str:
    """nginx's default escaping: ", \\ and bytes outside 0x20-0x7e as \\xHH."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    return "".join(
        c
        if " " <= c <= "~" and c not in '"\\'
        else "".join(f"\\x{b:02X}" for b in c.encode("latin-1", "backslashreplace"))
        for c in value
    )


_JSON_CONTROL = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_json(value: str) -> str:
    """nginx's escape=json: ", \\ and control characters; other bytes as they are."""
    return "".join(
        _JSON_CONTROL.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in value
    )


def _escape_none(value: str) -> str:
    return value


_ESCAPERS: dict[str, Callable[[str], str]] = {
    "default": _escape_default,
    "json": _escape_json,
    "none": _escape_none,
}
assert set(VARIABLES) == KNOWN, "every variable the format parser accepts renders"

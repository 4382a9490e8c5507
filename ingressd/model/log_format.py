"""log-format-upstream parsed: literal text and nginx variables, and the escaping.

Checked once, when the ConfigMap is read; observe/log_format.py renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .nginx_vars import VariableError, split_variables, variables

MAX_FORMAT = 4096
MAX_VARIABLES = 64
ESCAPES = ("default", "json", "none")

# The variables a format may use besides $http_NAME (a request header), as nginx
# names them; observe/log_format.py renders each (README: Metrics and logs).
KNOWN = frozenset(
    {
        "remote_addr",
        "the_real_ip",
        "remote_user",
        "time_local",
        "time_iso8601",
        "msec",
        "request",
        "request_method",
        "request_uri",
        "uri",
        "args",
        "query_string",
        "server_protocol",
        "host",
        "status",
        "bytes_sent",
        "body_bytes_sent",
        "request_length",
        "request_time",
        "upstream_addr",
        "upstream_status",
        "upstream_response_time",
        "upstream_connect_time",
        "upstream_response_length",
        "req_id",
        "request_id",
        "proxy_upstream_name",
        "proxy_alternative_upstream_name",
        "namespace",
        "ingress_name",
        "service_name",
        "service_port",
    }
)


@dataclass(frozen=True, slots=True)
class LogFormat:
    """A parsed log-format-upstream: (literal, variable, ..., literal) and the escaping
    ("default", "json" or "none", nginx's log_format escape=)."""

    parts: tuple[str, ...]
    escape: str = "default"


def parse_format(value: str, escape: str = "default") -> LogFormat:
    """log-format-upstream: nginx variables among text; ValueError for what cannot be logged."""
    if not value.strip():
        raise ValueError("the format is empty")
    if len(value) > MAX_FORMAT:
        raise ValueError(f"the format is longer than {MAX_FORMAT} characters")
    if "\n" in value or "\r" in value:
        raise ValueError("a line break in the format would split the line")
    try:
        parts = split_variables(value, strict=True)
    except VariableError as exc:
        raise ValueError(str(exc)) from None
    names = variables(parts)
    if len(names) > MAX_VARIABLES:
        raise ValueError(f"more than {MAX_VARIABLES} variables")
    for name in names:
        if name not in KNOWN and not (name.startswith("http_") and len(name) > 5):
            raise ValueError(f"${name} is not a variable ingressd logs")
    return LogFormat(parts, escape)

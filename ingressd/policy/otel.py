"""OpenTelemetry's settings as ingress-nginx spells them: the ConfigMap's
``enable-opentelemetry``, ``otlp-*``, ``otel-*`` and ``opentelemetry-*`` keys and the
Ingress annotations ``enable-opentelemetry``, ``opentelemetry-trust-incoming-span`` and
``opentelemetry-operation-name``, parsed and bounded. What they do at run time is
``observe/tracing.py``'s.

The references are ingress-nginx v1.15.1's
``internal/ingress/annotations/opentelemetry/main.go`` (the annotations),
``internal/ingress/controller/template/template.go`` ``buildOpentelemetryForLocation``
(how they combine with the ConfigMap's) and ``internal/ingress/controller/nginx.go``
``otelTmpl`` (what each ConfigMap key feeds).
"""

from __future__ import annotations

import importlib.util
import math
import re

from ..model.globals import SAMPLERS
from ..model.regex import fixed


class TracingValueError(ValueError):
    """A value these keys and annotations do not take; the text says why."""


# The packages tracing needs: an optional extra, so a plain install carries no protobuf.
EXTRA = "ingressd[tracing]"
_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")

MAX_NAME = 256
_HOST = fixed(
    r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_SERVICE = fixed(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
_NAME_CONTROL = fixed(r"[\x00-\x1f\x7f]")
# Linear (no nesting), and only ever run on the bounded annotation value.
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

# The nginx variables an operation name may use, as ingress-nginx's locations have
# them (nginx.tmpl sets $namespace, $ingress_name, $service_name, $service_port and
# $location_path in every location), worked out per request by observe/tracing.py.
NAME_VARIABLES = frozenset(
    {
        "request_method",
        "uri",
        "host",
        "scheme",
        "namespace",
        "ingress_name",
        "service_name",
        "service_port",
        "location_path",
    }
)


def missing() -> str | None:
    """Why tracing cannot run here (its packages are not installed), or None."""
    for name in _MODULES:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            return (
                f"tracing needs the OpenTelemetry packages, which are not installed "
                f"(pip install '{EXTRA}'); no spans are exported"
            )
    return None


def parse_collector_host(value: str) -> str:
    """otlp-collector-host: a DNS name or an IP address (no scheme, no port: those
    are otlp-collector-port's and OTLP/HTTP's); empty turns exporting off."""
    v = value.strip()
    if not v:
        return ""
    if len(v) > 253:
        raise TracingValueError("longer than 253 characters")
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    if ":" in v:
        import ipaddress

        try:
            return f"[{ipaddress.IPv6Address(v)}]"
        except ValueError:
            raise TracingValueError(
                f"{value!r} is not a host name or IP address (the port is otlp-collector-port)"
            ) from None
    if not _HOST.match(v):
        raise TracingValueError(f"{value!r} is not a host name or IP address")
    return v


def parse_port(value: str) -> int:
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or not 1 <= int(v) <= 65535:
        raise TracingValueError(f"{value!r} is not a port from 1 to 65535")
    return int(v)


def parse_service_name(value: str) -> str:
    v = value.strip()
    if not _SERVICE.match(v):
        raise TracingValueError(
            f"{value[:100]!r} is not a service name (letters, digits, . _ / -; up to 255)"
        )
    return v


def parse_sampler(value: str) -> str:
    v = value.strip()
    if v not in SAMPLERS:
        raise TracingValueError(f"{value[:100]!r} is not one of {', '.join(SAMPLERS)}")
    return v


def parse_ratio(value: str) -> float:
    try:
        ratio = float(value.strip())
    except ValueError:
        raise TracingValueError(f"{value[:100]!r} is not a number from 0 to 1") from None
    if math.isnan(ratio) or not 0.0 <= ratio <= 1.0:
        raise TracingValueError(f"{value[:100]!r} is not a number from 0 to 1")
    return ratio


def parse_operation_name(value: str) -> tuple[str, ...]:
    """opentelemetry-operation-name: text with the variables of ``NAME_VARIABLES``,
    split into literal, variable, literal, … literal; empty: the default name."""
    text = value.strip()
    if not text:
        return ()
    if len(text) > MAX_NAME or _NAME_CONTROL.search(text):
        raise TracingValueError(f"longer than {MAX_NAME} characters, or control characters in it")
    parts: list[str] = []
    pos = 0
    for m in _VARIABLE.finditer(text):
        name = m.group(1) or m.group(2)
        if name not in NAME_VARIABLES:
            known = ", ".join(f"${v}" for v in sorted(NAME_VARIABLES))
            raise TracingValueError(f"${name} is not a variable ingressd knows ({known})")
        parts += [text[pos : m.start()], name]
        pos = m.end()
    parts.append(text[pos:])
    return tuple(parts)

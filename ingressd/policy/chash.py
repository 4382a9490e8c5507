"""``upstream-hash-by``: the key a request is hashed by, parsed and rendered.

The annotation is an nginx "complex value": text and ``$variables``
(``$request_uri``, ``${host}-x``), split as ingress-nginx's
``util.parse_complex_value`` splits it and rendered per request as
``util.generate_var_value`` renders it (``rootfs/etc/nginx/lua/util.lua``).
Its value passes ingress-nginx's validator first
(``internal/ingress/annotations/upstreamhashby``: letters, digits, ``-``,
``_``, ``$``, ``{``, ``}``).

Where ingress-nginx differs from what is safe, ingressd fails closed instead:
nginx renders a variable it does not know as nothing, so a typo hashes every
request to one endpoint; here such a value is invalid, reported, and the
route is balanced as if it were not set. The ring itself is
``model/hashring.py``.
"""

from __future__ import annotations

from typing import Final

from ..model.nginx_vars import split_variables
from ..model.regex import fixed
from ..model.variables import REQUEST_ID_VARIABLES, RequestVars, unknown
from ..model.variables import render as render_text

# ingress-nginx's hashByRegex (upstreamhashby/main.go).
_ALLOWED: Final = fixed(r"^[A-Za-z0-9\-_${}]*$")

# The rendered key is cut here: it is hashed per request, and a client chooses
# most of it (a header, a URI up to the 8 KiB request line).
MAX_KEY: Final = 4096
MAX_VALUE: Final = 1024  # the annotation itself


def parse_key(value: str) -> tuple[str, ...]:
    """The key template as parts: literal, variable, literal, … literal.

    Raises ValueError for what ingress-nginx's validator refuses, and for
    variables ingressd does not render (capture groups ``$1`` included).
    """
    if not value.strip():
        raise ValueError("the key is empty")
    if len(value) > MAX_VALUE:
        raise ValueError(f"the key is longer than {MAX_VALUE} characters")
    if not _ALLOWED.match(value):
        raise ValueError(
            "only letters, digits and -_${} are allowed (ingress-nginx's validator), "
            "e.g. $request_uri or ${host}-$http_x_user"
        )
    parts = list(split_variables(value, strict=False))  # a "$" without a name is itself
    for at in range(1, len(parts), 2):
        # lua-nginx-module lowercases variable names (ngx.var): $HTTP_X is $http_x.
        parts[at] = parts[at].lower()
        _check(parts[at])
    return tuple(parts)


def _check(name: str) -> None:
    if name in REQUEST_ID_VARIABLES:
        # ingressd makes the id once the endpoint is chosen: every key would be the same.
        raise ValueError(f"${name} is not known when the endpoint is chosen")
    why = unknown(name)
    if why is not None:
        # nginx renders a variable it does not know as nothing: every key the same.
        raise ValueError(f"{why}; ingress-nginx would hash it as empty text")


def render(parts: tuple[str, ...], req: RequestVars) -> bytes:
    """The key for ``req``: the template with its variables' values, cut at ``MAX_KEY``."""
    key = render_text(parts, req).encode("latin-1", "replace")
    return key[:MAX_KEY]

"""``session-cookie-conditional-samesite-none``: which user agents get ``SameSite=None``.

Some browsers reject a cookie that carries ``SameSite=None`` (or treat it as
``Strict``), so the affinity cookie of such a client must go without it. The
list is ingress-nginx's (``rootfs/etc/nginx/lua/util/same_site.lua``, after
https://www.chromium.org/updates/same-site/incompatible-clients), matched on
the same substrings.
"""

from __future__ import annotations

# Substrings naming a client that mishandles SameSite=None: Chrome 51-66 (the
# Lua checks "Chrome/4", "/5", "/6"), and iOS 12 on iPhone and iPad.
_INCOMPATIBLE = (b"Chrome/4", b"Chrome/5", b"Chrome/6", b"CPU iPhone OS 12", b"iPad; CPU OS 12")


def same_site_none_compatible(user_agent: bytes | None) -> bool:
    """Whether a client with this User-Agent takes a ``SameSite=None`` cookie.

    Without a User-Agent nothing is known against it (the Lua would fail on a
    missing one; the attribute is kept).
    """
    if not user_agent:
        return True
    if any(s in user_agent for s in _INCOMPATIBLE):
        return False
    # Safari on macOS 10.14 (Mojave), which Chrome's user agent also names "Safari".
    return not (
        b"Macintosh" in user_agent
        and b"Intel Mac OS X 10_14" in user_agent
        and b"Safari" in user_agent
        and b"Chrome" not in user_agent
    )

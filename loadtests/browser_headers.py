"""The request headers of a browser page load, shared by bench.py's ``browser``
scenario and hotpath.py's ``--request browser``."""

from __future__ import annotations

# What a browser sends on a page load (Chrome 124 navigating from a search):
# twelve headers besides Host, with a cookie of a few pairs.
BROWSER_HEADERS = (
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
        "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    ),
    ("Accept-Language", "en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    (
        "Cookie",
        "_ga=GA1.1.1794025531.1714038400; session=8f14e45fceea167a5a36dedd4bea2543; "
        "theme=dark; consent=analytics%3Dtrue%26ads%3Dfalse",
    ),
    ("Referer", "https://www.google.com/"),
    ("sec-ch-ua", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
    ("sec-ch-ua-platform", '"Linux"'),
    ("Sec-Fetch-Site", "cross-site"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Dest", "document"),
    ("Upgrade-Insecure-Requests", "1"),
)


def browser_request(host: str, target: str) -> bytes:
    """A GET request head with ``BROWSER_HEADERS`` after ``Host``, as wrk sends it."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in BROWSER_HEADERS]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

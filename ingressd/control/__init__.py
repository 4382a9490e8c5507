"""Keeping the live table current: build, warm TLS, swap, report; cluster mode wired together."""

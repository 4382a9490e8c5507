"""Watching what the proxy does: request counts, /metrics, the access log, the process log."""

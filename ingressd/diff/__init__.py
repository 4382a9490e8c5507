"""``ingressd diff``: parity with a live reference, measured on the traffic paths."""

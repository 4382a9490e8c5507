"""``ingressd diff``: parity with a live reference, measured on the traffic paths.

``probes`` turns a routing table into probe requests (pure), ``sample`` makes
request paths a regular expression matches, ``client`` sends one probe to one
server, ``compare`` normalises and compares two answers (pure), ``report``
renders the result and ``command`` is the command line.
"""

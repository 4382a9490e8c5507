"""client_h2's subclasses of h2's classes, on either build (proxy/client_h2.py)."""

from __future__ import annotations

from h2.errors import ErrorCodes

from ingressd.proxy.client_h2 import _H2, CLOSED_STREAMS_KEPT, HeaderBlockTooLarge


def test_what_h2_reads_from_its_classes_is_overridden_on_either_build() -> None:
    """h2 reads these as class attributes of the classes it is given; a class
    compiled as a native subclass would hold them per instance, with h2's own
    value on the class (the CONTINUATION flood's GOAWAY said PROTOCOL_ERROR)."""
    assert HeaderBlockTooLarge("too large").error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert HeaderBlockTooLarge.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert _H2.MAX_CLOSED_STREAMS == CLOSED_STREAMS_KEPT

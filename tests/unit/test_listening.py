"""tests/support/listening.py's one judgement: which bind addresses count as loopback."""

from __future__ import annotations

import pytest

from tests.support.listening import Listener


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # gRPC's IPv6 socket bound to 127.0.0.1
        ("0.0.0.0", False),
        ("::", False),  # gRPC's wildcard: every interface, IPv4 included
        ("::ffff:0.0.0.0", False),
        ("192.0.2.2", False),
    ],
)
def test_loopback_is_judged_by_address(address, loopback):
    assert Listener(address, 8000, 1, "x").loopback is loopback

"""python-can 4.6.1's own bus tests (the sdist's test/ directory), unmodified, on xoq.

* ``back2back_test.py``: ``Back2BackTestCase`` and ``TestThreadSafeBus`` (the same tests on
  ``can.ThreadSafeBus``, plus concurrent writers) with both buses ``interface="xoq"`` on the
  P2P address of ONE ``xoq can-server virtual:bus0``: two clients of one server see each
  other's frames and not their own, like two nodes on one bus.
* ``network_test.py``: the producer/consumer test. Upstream hard-codes the ``virtual``
  interface and two channel names; here ``can.interface.Bus`` maps those channel names to the
  server's address and the interface to ``xoq`` (the test's code runs unchanged).

Every upstream test is one pytest test; each upstream class gets its own server.
"""

from __future__ import annotations

import importlib
import sys
import unittest
from unittest import mock

UPSTREAM_SDIST = "python-can-4.6.1"

# Deadline of a test without upstream's own pytest.mark.timeout (the slowest legitimate one,
# test_timestamp, sleeps 2 s; test_send_periodic_duration runs about 1.2 s).
DEADLINE = 30.0

# network_test's virtual channels, all served by the one xoq server.
NETWORK_CHANNELS = ("testProducer", "testProducerConsumer")


def _import_python_can_tests(test_dir):
    """python-can's test modules, as its own runner imports them: the package ``test`` (its
    modules use ``from .config import ...`` and ``from test.config import ...``)."""
    saved = {k: v for k, v in sys.modules.items() if k == "test" or k.startswith("test.")}
    for k in saved:
        del sys.modules[k]  # the standard library's regression-test package, if imported
    root = str(test_dir.parent)
    sys.path.insert(0, root)
    try:
        b2b = importlib.import_module("test.back2back_test")
        net = importlib.import_module("test.network_test")
    finally:
        sys.path.remove(root)
        sys.modules.update(saved)
    return b2b, net


def upstream_cases(test_dir, upstream) -> list:
    import can

    b2b, net = _import_python_can_tests(test_dir)

    class Back2BackTestCase(b2b.Back2BackTestCase):
        INTERFACE_1 = INTERFACE_2 = "xoq"
        CHANNEL_1 = CHANNEL_2 = None  # the server's address, set before each test

    class TestThreadSafeBus(b2b.TestThreadSafeBus):
        INTERFACE_1 = INTERFACE_2 = "xoq"
        CHANNEL_1 = CHANNEL_2 = None

    class ControllerAreaNetworkTestCase(net.ControllerAreaNetworkTestCase):
        CHANNEL_1 = CHANNEL_2 = None

        def setUp(self) -> None:
            super().setUp()
            address = self.CHANNEL_1
            real_bus = can.interface.Bus

            def bus(channel=None, interface=None, *args, **kwargs):
                if channel in NETWORK_CHANNELS:
                    channel, interface = address, "xoq"
                return real_bus(channel, interface, *args, **kwargs)

            patch = mock.patch.object(can.interface, "Bus", bus)
            patch.start()
            self.addCleanup(patch.stop)

    cases = []
    for module, cls in (
        ("back2back_test", Back2BackTestCase),
        ("back2back_test", TestThreadSafeBus),
        ("network_test", ControllerAreaNetworkTestCase),
    ):
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(cls)
        for test in upstream.flatten(suite):
            name = f"{module}.{cls.__name__}.{test._testMethodName}"
            cases.append(upstream.UpstreamCase.of(name, f"{module}.{cls.__name__}", test))
    return cases


def test_python_can(upstream_case, can_devices, upstream) -> None:
    case = upstream_case

    def configure(test, address: str) -> None:
        cls = type(test)
        cls.CHANNEL_1 = cls.CHANNEL_2 = address

    upstream.run_case(case, can_devices, upstream.upstream_deadline(case, DEADLINE), configure)

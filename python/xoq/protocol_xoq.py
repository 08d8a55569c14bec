"""pyserial URL handler: ``serial.serial_for_url("xoq://<address>", baudrate=...)``.

pyserial finds it through ``serial.protocol_handler_packages`` (xoq adds itself there when
pyserial is imported; see :mod:`xoq._autopatch`) and instantiates ``Serial``.
"""

from .serial_port import RemoteSerial as Serial

__all__ = ["Serial"]

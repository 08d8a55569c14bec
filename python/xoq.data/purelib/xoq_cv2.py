"""``xoq_cv2.VideoCapture(address)``: remote cameras with OpenCV's capture API.

The implementation is :mod:`xoq.cv2`; this top-level name is the one XoQ 0.3.6 advertised.
"""

from xoq.cv2 import VideoCapture, patch_cv2  # noqa: F401

__all__ = ["VideoCapture"]

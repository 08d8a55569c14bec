# Client side of `xoq bench camera --python`: OpenCV code as users write it
# (cv2.VideoCapture on an xoq address), timing capture -> numpy array from the capture time
# the frame carries (CAP_PROP_POS_MSEC). Prints one line of key=value pairs.
import resource
import sys
import time

import cv2

addr, seconds = sys.argv[1], float(sys.argv[2])
cap = cv2.VideoCapture(addr)
for _ in range(10):  # warm up: first keyframe, caches
    assert cap.read()[0]
lat = []
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.time()
while time.time() - t0 < seconds:
    ok, frame = cap.read()
    assert ok and frame.ndim == 3
    lat.append(time.time() * 1e3 - cap.get(cv2.CAP_PROP_POS_MSEC))
wall = time.time() - t0
ru1 = resource.getrusage(resource.RUSAGE_SELF)
cap.release()
lat.sort()
cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
print(
    f"p50_ms={lat[len(lat) // 2]:.2f} p95_ms={lat[round((len(lat) - 1) * 0.95)]:.2f} "
    f"fps={len(lat) / wall:.2f} cores={cpu / wall:.3f} shape={frame.shape[1]}x{frame.shape[0]}"
)

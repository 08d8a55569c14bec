# Client side of `xoq bench depth --python`: LeRobot-style pyrealsense2 code on xoq.realsense,
# timing capture -> numpy arrays (depth uint16 and colour uint8) from the capture time the
# frameset carries (get_timestamp, robot clock, ms). Prints one line of key=value pairs.
import resource
import sys
import time

import numpy as np
import xoq.realsense as rs

addr, seconds = sys.argv[1], float(sys.argv[2])
w, h, cw, ch = (int(v) for v in sys.argv[3:7])
pipe, cfg = rs.pipeline(), rs.config()
cfg.enable_device(addr)
cfg.enable_stream(rs.stream.depth, w, h, rs.format.z16, 30)
cfg.enable_stream(rs.stream.color, cw, ch, rs.format.rgb8, 30)
pipe.start(cfg)
for _ in range(5):  # warm up
    pipe.wait_for_frames()
lat = []
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.time()
while time.time() - t0 < seconds:
    ok, fs = pipe.try_wait_for_frames(5000)
    assert ok
    depth = np.asanyarray(fs.get_depth_frame().get_data())
    color = np.asanyarray(fs.get_color_frame().get_data())
    assert depth.dtype == np.uint16 and depth.shape == (h, w) and color.shape == (ch, cw, 3)
    lat.append(time.time() * 1e3 - fs.get_timestamp())
wall = time.time() - t0
ru1 = resource.getrusage(resource.RUSAGE_SELF)
pipe.stop()
lat.sort()
cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
print(
    f"p50_ms={lat[len(lat) // 2]:.2f} p95_ms={lat[round((len(lat) - 1) * 0.95)]:.2f} "
    f"fps={len(lat) / wall:.2f} cores={cpu / wall:.3f}"
)

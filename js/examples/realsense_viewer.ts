// A depth camera (a RealSense behind `xoq depth-server`, or the demo's synthetic one) from the
// relay: colour played by the stock MoQ player, depth decoded here (lossless: RVL, deflated
// when that helps) and drawn with a colour map, the distance under the cursor, and per-frame
// numbers (frame, capture-to-display latency, compression).
import { type CameraView, watchCamera } from "../src/camera";
import { type DepthInfo, type Intrinsics, deproject } from "../src/index";
import { Rolling, dialUrl, setStatus } from "./common";
import { CODEC_NAMES, type DepthFeed, type DepthFrame, FAR_M, NEAR_M, depthLut, startDepthFeed, turbo } from "./depth_feed";

/** What the page exposes to tests and the curious. */
interface DepthView {
  /** Frames decoded and drawn. */
  readonly frames: number;
  /** Frame number of the newest frame drawn. */
  readonly lastSeq: number | null;
  readonly width: number | null;
  readonly height: number | null;
  /** Metres per depth unit (from the catalog; 0.001 until it arrives). */
  readonly scale: number;
  readonly info: DepthInfo | null;
  readonly intrinsics: Intrinsics | null;
  /** Capture → drawn, ms (median of the last 30 frames). */
  readonly latencyMs: number | null;
  /** w × h × 2 bytes over the blob's bytes, for the newest frame. */
  readonly compression: number | null;
  readonly codec: string | null;
  readonly skipped: number;
  readonly decodeErrors: number;
  /** The newest frame's value at pixel (x, y), in depth units (0: no measurement); null outside. */
  valueAt(x: number, y: number): number | null;
  /** `n` values of the newest frame from index `start` (row order). */
  pixels(start: number, n: number): number[];
  /** The newest frame's capture time (µs since the epoch). */
  readonly timestampUs: number | null;
  /** With "match the colour" (?sync=1): how far the shown depth was captured from the colour frame, ms. */
  readonly syncMs: number | null;
}

declare global {
  interface Window {
    xoqDepth?: DepthView;
    xoqCamera?: CameraView;
  }
}

const canvas = document.getElementById("depth") as HTMLCanvasElement;
const ctx = canvas.getContext("2d", { willReadFrequently: false }) as CanvasRenderingContext2D;
const readout = document.getElementById("depth-at") as HTMLElement;
const frameInfo = document.getElementById("frame-info") as HTMLElement;
const stats = document.getElementById("stats") as HTMLElement;
const state = window.xoqState;
Object.assign(state, { frames: 0, lastSeq: null, latencyMs: null, compression: null, colorFrames: 0 });

let scale = 0.001;
let lut = depthLut(scale);
let latest: DepthFrame | undefined;
let drawn: DepthFrame | undefined;
let imageData: ImageData | undefined;
let drawnFrames = 0;
let feed: DepthFeed | undefined;
const latency = new Rolling(30);
// With "match the colour": how far apart the shown depth and colour frames were captured, ms.
let syncMs: number | null = null;
// The cursor, in depth pixels (over either picture: they are aligned).
let cursor: { x: number; y: number } | undefined;

// Legend under the depth picture: the colour map and its distances.
function drawLegend(): void {
  const el = document.getElementById("legend") as HTMLCanvasElement | null;
  if (!el) return;
  const g = el.getContext("2d") as CanvasRenderingContext2D;
  for (let x = 0; x < el.width; x++) {
    const [r, gg, b] = turbo(x / (el.width - 1));
    g.fillStyle = `rgb(${r * 255},${gg * 255},${b * 255})`;
    g.fillRect(x, 0, 1, el.height);
  }
  const labels = document.getElementById("legend-labels");
  if (labels) labels.textContent = `${NEAR_M} m … ${FAR_M} m   (black: no measurement)`;
}
drawLegend();

function valueAt(x: number, y: number): number | null {
  const f = drawn ?? latest;
  if (!f) return null;
  const { width, height, data } = f.image;
  x = Math.floor(x);
  y = Math.floor(y);
  if (x < 0 || y < 0 || x >= width || y >= height) return null;
  return data[y * width + x]!;
}

function showReadout(info: DepthInfo | undefined): void {
  if (!cursor) return;
  const v = valueAt(cursor.x, cursor.y);
  if (v === null) {
    readout.textContent = "–";
    return;
  }
  const where = `pixel (${cursor.x}, ${cursor.y})`;
  if (v === 0) {
    readout.textContent = `${where}: no measurement (0)`;
    return;
  }
  const m = v * scale;
  // Millimetres from the scale (a D405 counts 0.1 mm: show the fraction then).
  const mm = m * 1000;
  const mmText = Number.isInteger(Math.round(mm * 1000) / 1000) ? mm.toFixed(0) : mm.toFixed(1);
  let text = `${where}: ${mmText} mm = ${m.toFixed(3)} m`;
  if (info) {
    const [px, py, pz] = deproject(info.depth, cursor.x, cursor.y, m);
    text += `   point (${px.toFixed(3)}, ${py.toFixed(3)}, ${pz.toFixed(3)}) m`;
  }
  readout.textContent = text;
}

// Follow the cursor over a picture: its position as a depth pixel.
function track(el: HTMLElement): void {
  el.addEventListener("mousemove", (e) => {
    const target = el instanceof HTMLCanvasElement ? el : el.querySelector("canvas");
    const f = drawn ?? latest;
    if (!target || !f) return;
    const r = target.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return;
    const x = Math.floor(((e.clientX - r.left) / r.width) * f.image.width);
    const y = Math.floor(((e.clientY - r.top) / r.height) * f.image.height);
    cursor = { x: Math.min(Math.max(x, 0), f.image.width - 1), y: Math.min(Math.max(y, 0), f.image.height - 1) };
    showReadout(feed?.info);
    paintCursor();
  });
  el.addEventListener("mouseleave", () => {
    cursor = undefined;
    readout.textContent = "move the cursor over a picture";
    if (drawn) paint(drawn, false);
  });
}

function paintCursor(): void {
  if (!cursor || !imageData) return;
  ctx.putImageData(imageData, 0, 0);
  ctx.strokeStyle = "rgba(255,255,255,0.9)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(cursor.x - 8, cursor.y + 0.5);
  ctx.lineTo(cursor.x + 9, cursor.y + 0.5);
  ctx.moveTo(cursor.x + 0.5, cursor.y - 8);
  ctx.lineTo(cursor.x + 0.5, cursor.y + 9);
  ctx.stroke();
}

// Colour-map a frame onto the canvas.
function paint(f: DepthFrame, fresh: boolean): void {
  const { width, height, data } = f.image;
  if (canvas.width !== width || canvas.height !== height || !imageData) {
    canvas.width = width;
    canvas.height = height;
    imageData = ctx.createImageData(width, height);
  }
  if (fresh) {
    const out = new Uint32Array(imageData.data.buffer);
    for (let i = 0; i < data.length; i++) out[i] = lut[data[i]!]!;
  }
  ctx.putImageData(imageData, 0, 0);
  paintCursor();
}

/** With "match the colour": keep this many depth frames to pair with colour frames (> 1 s). */
const KEEP_DEPTH = 45;
/** Pair a colour frame with depth captured at most this far from it (µs). */
const PAIR_TOLERANCE_US = 40_000;

// Draw a decoded frame (at the next animation frame) and count it.
function show(f: DepthFrame): void {
  paint(f, true);
  drawn = f;
  drawnFrames++;
  // Capture → drawn on this machine's clock (the demo's camera runs on the same one).
  latency.push(Date.now() - f.timestampUs / 1000);
  showReadout(feed?.info);
  showFrameInfo();
}

async function main(): Promise<void> {
  const syncBox = document.getElementById("sync") as HTMLInputElement;
  syncBox.checked = new URLSearchParams(location.search).get("sync") === "1";
  let queued = false;
  feed = await startDepthFeed({
    onCatalog(info) {
      if (info && info.scale !== scale) {
        scale = info.scale;
        lut = depthLut(scale);
      }
    },
    onFrame(f) {
      latest = f;
      if (queued || syncBox.checked) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        if (latest && !syncBox.checked) show(latest);
      });
    },
    okText: (f) => `showing depth of "${f.name}" from ${f.cfg.relay}`,
  });
  if (!feed) return;
  const fd = feed;

  // Colour: the same broadcast's `video` track in the stock player (its own relay session).
  const view = watchCamera(document.getElementById("color") as HTMLElement, dialUrl(fd.cfg), fd.name);
  window.xoqCamera = view;
  window.addEventListener("pagehide", () => view.close());
  track(canvas);
  track(document.getElementById("color") as HTMLElement);

  // "Match the colour": each colour frame the player shows (presentation time + the catalog's
  // epoch = its capture time) gets the depth of the same capture, at the video's latency.
  let pairedPts: number | undefined;
  let pairing = false;
  const follow = (): void => {
    requestAnimationFrame(follow);
    const on = syncBox.checked;
    fd.keepRecent = on ? KEEP_DEPTH : 0;
    fd.decodeNewest = !on;
    state.sync = on;
    if (!on) {
      pairedPts = undefined;
      return;
    }
    const pts = view.element.renderer.out.timestamp.peek();
    const epochUs = fd.epochUs;
    if (pairing || pts === undefined || epochUs === undefined || pts === pairedPts) return;
    pairedPts = pts;
    pairing = true;
    const captureUs = epochUs + Math.round(pts * 1000);
    void fd.decodeAt(captureUs, PAIR_TOLERANCE_US).then((f) => {
      pairing = false;
      if (f && syncBox.checked) {
        syncMs = Math.abs(f.timestampUs - captureUs) / 1000;
        show(f);
      }
    });
  };
  requestAnimationFrame(follow);
  syncBox.addEventListener("change", () => {
    syncMs = null;
    latency.clear();
  });

  let lastFrames = 0;
  let lastTick = performance.now();
  let fps = 0;
  setInterval(() => {
    const now = performance.now();
    fps = ((drawnFrames - lastFrames) * 1000) / (now - lastTick);
    lastFrames = drawnFrames;
    lastTick = now;
    const info = fd.info;
    const c = view.status();
    state.colorFrames = c.framesShown;
    const d = drawn;
    const k = info?.depth;
    stats.textContent = [
      `broadcast    ${fd.name}${info?.name ? ` (${info.name}${info.serial ? `, serial ${info.serial}` : ""})` : ""}`,
      `depth        ${d ? `${d.image.width}×${d.image.height}, ~${fps.toFixed(0)} frames/s, ${drawnFrames} drawn` : "–"}`,
      `             ${fd.received} received, ${fd.skipped} skipped, ${fd.decodeErrors} undecodable${d ? `, decode ${d.decodeMs.toFixed(1)} ms` : ""}`,
      `scale        ${info ? `${info.scale} m per unit` : "– (no catalog yet: assuming 0.001)"}`,
      `intrinsics   ${k ? `fx ${k.fx.toFixed(1)} fy ${k.fy.toFixed(1)} ppx ${k.ppx.toFixed(1)} ppy ${k.ppy.toFixed(1)} (${k.model})` : "–"}`,
      `colour       ${c.link}${c.width ? `, ${c.width}×${c.height}` : ""}, ${c.framesShown} frames shown${c.error ? `, ${c.error}` : ""}`,
    ].join("\n");
  }, 1000);
}

// The line under the pictures: frame number, latency, compression.
function showFrameInfo(): void {
  const f = drawn;
  if (!f) return;
  const l = latency.median();
  const ratio = (f.image.width * f.image.height * 2) / f.blobBytes;
  Object.assign(state, {
    frames: drawnFrames,
    lastSeq: f.seq,
    latencyMs: l ?? null,
    compression: ratio,
  });
  state.syncMs = syncMs;
  frameInfo.textContent =
    `frame ${f.seq} · capture → display ${l === undefined ? "–" : `${l.toFixed(1)} ms`} · ` +
    `compression ${ratio.toFixed(1)}:1 (${CODEC_NAMES[f.codec] ?? `codec ${f.codec}`}, ${(f.blobBytes / 1024).toFixed(1)} KiB of ${((f.image.width * f.image.height * 2) / 1024).toFixed(0)} KiB)` +
    (syncMs === null ? "" : syncMs === 0 ? " · the colour frame's capture" : ` · ${syncMs.toFixed(0)} ms from the colour frame's capture`);
}

window.xoqDepth = {
  get frames() {
    return drawnFrames;
  },
  get lastSeq() {
    return drawn?.seq ?? null;
  },
  get width() {
    return drawn?.image.width ?? null;
  },
  get height() {
    return drawn?.image.height ?? null;
  },
  get scale() {
    return scale;
  },
  get info() {
    return feed?.info ?? null;
  },
  get intrinsics() {
    return feed?.info?.depth ?? null;
  },
  get latencyMs() {
    return latency.median() ?? null;
  },
  get compression() {
    return drawn ? (drawn.image.width * drawn.image.height * 2) / drawn.blobBytes : null;
  },
  get codec() {
    return drawn ? (CODEC_NAMES[drawn.codec] ?? String(drawn.codec)) : null;
  },
  get skipped() {
    return feed?.skipped ?? 0;
  },
  get decodeErrors() {
    return feed?.decodeErrors ?? 0;
  },
  get timestampUs() {
    return drawn?.timestampUs ?? null;
  },
  get syncMs() {
    return syncMs;
  },
  valueAt,
  pixels(start: number, n: number): number[] {
    const f = drawn;
    return f ? Array.from(f.image.data.subarray(start, start + n)) : [];
  },
};

main().catch((e) => {
  if (window.xoqState.kind !== "error") setStatus(`error: ${(e as Error).message ?? e}`, "error");
});

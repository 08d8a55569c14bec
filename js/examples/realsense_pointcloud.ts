// A depth camera from the relay as a 3D point cloud: each depth frame is uploaded as a 16-bit
// integer texture (R16UI) and a fixed grid of one point per pixel is placed in space by the
// vertex shader (pinhole deprojection with the catalog's intrinsics; pixels without a
// measurement are dropped). Points are coloured by distance, or by the colour picture, which
// the stock MoQ player decodes from the same broadcast (aligned with depth: same viewpoint),
// each colour frame drawn with the depth of its own capture.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { type CameraView, watchCamera } from "../src/camera";
import type { DepthInfo, Intrinsics } from "../src/index";
import { Rolling, dialUrl, setStatus } from "./common";
import { type DepthFeed, type DepthFrame, FAR_M, NEAR_M, TURBO_GLSL, startDepthFeed } from "./depth_feed";

type ColorBy = "depth" | "picture";

/** What the page exposes to tests and the curious. */
interface CloudView {
  /** Depth frames uploaded and drawn. */
  readonly frames: number;
  /** Points drawn for the newest frame (pixels with a measurement). */
  readonly points: number;
  readonly width: number | null;
  readonly height: number | null;
  readonly lastSeq: number | null;
  readonly scale: number | null;
  readonly intrinsics: Intrinsics | null;
  /** What colours the points now ("picture" only once the colour player shows frames). */
  readonly colorBy: ColorBy;
  /** Colour pictures uploaded as the texture. */
  readonly colorFrames: number;
  /** Frames drawn coloured by picture, each with the depth of the colour frame's capture. */
  readonly pairedFrames: number;
  /** Picture mode: how far apart the last drawn colour and depth were captured, ms (0: the same capture). */
  readonly syncMs: number | null;
  /** WebGL errors seen by gl.getError() after drawing (0 is right). */
  readonly glErrors: number;
  /** Capture → drawn, ms (median of the last 30 frames). */
  readonly latencyMs: number | null;
  /** Choose the colouring. */
  setColorBy(mode: ColorBy): void;
  /** The 3D scene, for the curious. */
  readonly scene: THREE.Scene;
}

declare global {
  interface Window {
    xoqCloud?: CloudView;
    xoqCamera?: CameraView;
  }
}

const state = window.xoqState;
Object.assign(state, { frames: 0, points: 0, lastSeq: null, colorBy: "depth", glErrors: 0 });
const stats = document.getElementById("stats") as HTMLElement;
const container = document.getElementById("view") as HTMLElement;
const select = document.getElementById("color-by") as HTMLSelectElement;
const sizeInput = document.getElementById("point-size") as HTMLInputElement;

// --- scene: the camera frame as librealsense's (x right, y down, z forward), metres ----------
const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio);
container.appendChild(renderer.domElement);
const gl = renderer.getContext();
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x0d0e12);
const camera = new THREE.PerspectiveCamera(50, 1, 0.02, 50);
camera.up.set(0, -1, 0); // y points down in the depth camera's frame
camera.position.set(1.1, -1.0, -1.0);
const controls = new OrbitControls(camera, renderer.domElement);
controls.target.set(0, 0.15, 1.7);
controls.update();

const VERTEX = /* glsl */ `
uniform usampler2D uDepth;
uniform sampler2D uColor;
uniform vec4 uDepthK;     // fx, fy, ppx, ppy of the depth picture
uniform vec4 uColorK;     // the same for the colour picture
uniform vec2 uColorSize;  // the size the colour intrinsics are for
uniform float uScale;     // metres per depth unit
uniform vec2 uRange;      // colour map: near, far (m)
uniform int uColorBy;     // 0: distance, 1: colour picture
uniform float uPointPx;   // pixels per metre at 1 m in the view
uniform float uSize;      // point size in depth pixels
out vec3 vColor;
${TURBO_GLSL}
void main() {
  ivec2 px = ivec2(position.xy);
  uint d = texelFetch(uDepth, px, 0).r;
  if (d == 0u) {
    // No measurement: outside the clip volume, so nothing is drawn.
    gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
    gl_PointSize = 0.0;
    vColor = vec3(0.0);
    return;
  }
  float z = float(d) * uScale;
  vec3 p = vec3((position.x - uDepthK.z) / uDepthK.x * z, (position.y - uDepthK.w) / uDepthK.y * z, z);
  vec4 mv = modelViewMatrix * vec4(p, 1.0);
  gl_Position = projectionMatrix * mv;
  // A pixel's footprint at its distance, as seen from the view (at least one screen pixel).
  gl_PointSize = clamp(uSize * (z / uDepthK.x) * uPointPx / max(-mv.z, 0.01), 1.0, 16.0);
  if (uColorBy == 1) {
    vec2 c = vec2(p.x / z * uColorK.x + uColorK.z, p.y / z * uColorK.y + uColorK.w) / uColorSize;
    vColor = texture(uColor, c).rgb;
  } else {
    vColor = turbo((z - uRange.x) / (uRange.y - uRange.x));
  }
}`;

const FRAGMENT = /* glsl */ `
in vec3 vColor;
out vec4 fragColor;
void main() {
  fragColor = vec4(vColor, 1.0);
}`;

const blankColor = new THREE.DataTexture(new Uint8Array([128, 128, 128, 255]), 1, 1);
blankColor.needsUpdate = true;
const uniforms = {
  uDepth: { value: null as THREE.DataTexture | null },
  uColor: { value: blankColor as THREE.Texture },
  uDepthK: { value: new THREE.Vector4(1, 1, 0, 0) },
  uColorK: { value: new THREE.Vector4(1, 1, 0, 0) },
  uColorSize: { value: new THREE.Vector2(1, 1) },
  uScale: { value: 0.001 },
  uRange: { value: new THREE.Vector2(NEAR_M, FAR_M) },
  uColorBy: { value: 0 },
  uPointPx: { value: 500 },
  uSize: { value: 1.5 },
};
const material = new THREE.ShaderMaterial({
  glslVersion: THREE.GLSL3,
  vertexShader: VERTEX,
  fragmentShader: FRAGMENT,
  uniforms,
});

// The grid of points and the depth texture, made again when the picture size changes.
let cloud: THREE.Points | undefined;
let depthTex: THREE.DataTexture | undefined;
function grid(width: number, height: number): void {
  if (cloud) {
    scene.remove(cloud);
    cloud.geometry.dispose();
  }
  depthTex?.dispose();
  const pos = new Float32Array(width * height * 3);
  for (let v = 0, i = 0; v < height; v++) {
    for (let u = 0; u < width; u++, i += 3) {
      pos[i] = u;
      pos[i + 1] = v;
    }
  }
  const geom = new THREE.BufferGeometry();
  geom.setAttribute("position", new THREE.BufferAttribute(pos, 3));
  cloud = new THREE.Points(geom, material);
  cloud.frustumCulled = false; // positions are pixels: the shader places the points
  scene.add(cloud);
  depthTex = new THREE.DataTexture(new Uint16Array(width * height), width, height, THREE.RedIntegerFormat, THREE.UnsignedShortType);
  depthTex.internalFormat = "R16UI";
  depthTex.minFilter = THREE.NearestFilter;
  depthTex.magFilter = THREE.NearestFilter;
  depthTex.generateMipmaps = false;
  depthTex.unpackAlignment = 2;
  depthTex.flipY = false;
  uniforms.uDepth.value = depthTex;
}

// The depth camera: its frustum out to 0.4 m and its axes, where the points start.
let frustum: THREE.LineSegments | undefined;
function drawFrustum(k: Intrinsics): void {
  if (frustum) {
    scene.remove(frustum);
    frustum.geometry.dispose();
  }
  const z = 0.4;
  const corner = (u: number, v: number): THREE.Vector3 => new THREE.Vector3(((u - k.ppx) / k.fx) * z, ((v - k.ppy) / k.fy) * z, z);
  const c = [corner(0, 0), corner(k.width, 0), corner(k.width, k.height), corner(0, k.height)];
  const o = new THREE.Vector3();
  const pts = [o, c[0], o, c[1], o, c[2], o, c[3], c[0], c[1], c[1], c[2], c[2], c[3], c[3], c[0]] as THREE.Vector3[];
  frustum = new THREE.LineSegments(new THREE.BufferGeometry().setFromPoints(pts), new THREE.LineBasicMaterial({ color: 0x8890a8 }));
  scene.add(frustum);
}
scene.add(new THREE.AxesHelper(0.15));

// Render on demand: a new frame, a move of the view, a resize.
let dirty = true;
controls.addEventListener("change", () => (dirty = true));
const resize = (): void => {
  const w = container.clientWidth;
  const h = Math.max(420, container.clientHeight);
  renderer.setSize(w, h, false);
  camera.aspect = w / h;
  camera.updateProjectionMatrix();
  uniforms.uPointPx.value = (h * renderer.getPixelRatio()) / (2 * Math.tan((camera.fov * Math.PI) / 360));
  dirty = true;
};
window.addEventListener("resize", resize);
resize();

// --- colour: the stock player's pictures as a texture ----------------------------------------
// Colouring by picture pairs each colour frame the player shows with the depth of the same
// capture (the colour frame's presentation time + the catalog's epoch is its capture time,
// the depth frame's timestamp is the same clock), so a moving ball keeps its colour; the
// cloud then runs at the colour video's latency. Colouring by distance shows the newest depth.
let view: CameraView | undefined;
// The colour frame being paired, copied out of the player's canvas.
const staging = document.createElement("canvas");
const stagingCtx = staging.getContext("2d") as CanvasRenderingContext2D;
let colorTex: THREE.CanvasTexture | undefined;
let colorFrames = 0;
let colorBy: ColorBy = (new URLSearchParams(location.search).get("color") as ColorBy | null) === "depth" ? "depth" : "picture";
select.value = colorBy;
select.addEventListener("change", () => setColorBy(select.value as ColorBy));
sizeInput.addEventListener("input", () => {
  uniforms.uSize.value = Number(sizeInput.value);
  dirty = true;
});

function setColorBy(mode: ColorBy): void {
  colorBy = mode;
  select.value = mode;
  dirty = true;
}

/** Keep this many depth frames (undecoded) to pair with the colour frames: over 1 s at 30/s. */
const KEEP_DEPTH = 45;
/** Pair a colour frame with depth captured at most this far from it (µs). */
const PAIR_TOLERANCE_US = 40_000;

// --- the depth feed ------------------------------------------------------------------------
let feed: DepthFeed | undefined;
let latest: DepthFrame | undefined;
let uploaded: DepthFrame | undefined;
let frames = 0;
let points = 0;
let glErrors = 0;
let lastError = "";
const latency = new Rolling(30);
// Picture mode: the colour frame last paired (its presentation time, ms), a pairing under way,
// a paired depth frame waiting to be drawn, and how far apart the last pair was captured.
let pairedPts: number | undefined;
let pairing = false;
let paired: DepthFrame | undefined;
let pairedFrames = 0;
let syncMs: number | null = null;

function applyInfo(info: DepthInfo | undefined): void {
  if (!info) return;
  const k = info.depth;
  uniforms.uDepthK.value.set(k.fx, k.fy, k.ppx, k.ppy);
  const c = info.color;
  uniforms.uColorK.value.set(c.fx, c.fy, c.ppx, c.ppy);
  uniforms.uColorSize.value.set(c.width, c.height);
  uniforms.uScale.value = info.scale;
  drawFrustum(k);
  dirty = true;
}

function upload(f: DepthFrame): void {
  const { width, height, data } = f.image;
  if (!depthTex || depthTex.image.width !== width || depthTex.image.height !== height) grid(width, height);
  (depthTex!.image.data as Uint16Array).set(data);
  depthTex!.needsUpdate = true;
  let n = 0;
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) n++;
  points = n;
  uploaded = f;
  dirty = true;
}

// Copy the colour frame on the player's canvas (presentation time `pts`, ms) and find the
// depth of its capture; the next animation frame draws both.
function pair(fd: DepthFeed, v: CameraView, pts: number, epochUs: number): void {
  const src = v.canvas;
  if (staging.width !== src.width || staging.height !== src.height || !colorTex) {
    staging.width = src.width;
    staging.height = src.height;
    // A texture's storage is allocated at its first size: a new size needs a new texture.
    colorTex?.dispose();
    colorTex = new THREE.CanvasTexture(staging);
    colorTex.flipY = false;
    colorTex.minFilter = THREE.LinearFilter;
    colorTex.generateMipmaps = false;
    uniforms.uColor.value = colorTex;
  }
  stagingCtx.drawImage(src, 0, 0);
  pairedPts = pts;
  pairing = true;
  const captureUs = epochUs + Math.round(pts * 1000);
  void fd.decodeAt(captureUs, PAIR_TOLERANCE_US).then((f) => {
    // No depth of that capture (yet, or any more): the newest there is, and say how far off.
    const d = f ?? fd.latest;
    if (!d) {
      pairing = false;
      return;
    }
    syncMs = Math.abs(d.timestampUs - captureUs) / 1000;
    paired = d;
  });
}

function loop(): void {
  requestAnimationFrame(loop);
  const fd = feed;
  const info = fd?.info;
  const pts = view?.element.renderer.out.timestamp.peek();
  const epochUs = fd?.epochUs;
  const picture = colorBy === "picture" && info !== undefined && pts !== undefined && epochUs !== undefined;
  if (fd) {
    fd.keepRecent = picture ? KEEP_DEPTH : 0;
    fd.decodeNewest = !picture;
  }
  if (uniforms.uColorBy.value !== (picture ? 1 : 0)) {
    uniforms.uColorBy.value = picture ? 1 : 0;
    dirty = true;
  }
  state.colorBy = picture ? "picture" : "depth";
  let fresh: DepthFrame | undefined;
  if (picture) {
    if (paired) {
      fresh = paired;
      paired = undefined;
      upload(fresh);
      colorTex!.needsUpdate = true;
      colorFrames++;
      pairedFrames++;
    } else if (!pairing && pts !== pairedPts && fd && view) {
      pair(fd, view, pts, epochUs);
    }
  } else {
    syncMs = null;
    pairing = false;
    paired = undefined;
    pairedPts = undefined;
    const f = latest;
    if (f !== undefined && f !== uploaded && info !== undefined) {
      fresh = f;
      upload(f);
    }
  }
  if (!dirty || !cloud) return;
  dirty = false;
  renderer.render(scene, camera);
  if (fresh) {
    // The pair is drawn: the next colour frame may be paired.
    pairing = false;
    frames++;
    latency.push(Date.now() - fresh.timestampUs / 1000);
    // gl.getError() waits for the GPU: look now and then, not every frame.
    if (frames === 1 || frames % 30 === 0) {
      const e = gl.getError();
      if (e !== gl.NO_ERROR) {
        glErrors++;
        lastError = `0x${e.toString(16)}`;
      }
    }
    Object.assign(state, { frames, points, lastSeq: fresh.seq, glErrors, syncMs, latencyMs: latency.median() ?? null });
  }
}

async function main(): Promise<void> {
  feed = await startDepthFeed({
    needsInfo: true,
    onCatalog: applyInfo,
    onFrame(f) {
      latest = f;
    },
    okText: (fd) => `point cloud of "${fd.name}" from ${fd.cfg.relay}: drag to turn, scroll to zoom, right-drag to pan`,
  });
  if (!feed) return;
  const fd = feed;
  // Colour from the same broadcast, decoded by the stock player (its own relay session).
  const box = document.getElementById("color") as HTMLElement;
  view = watchCamera(box, dialUrl(fd.cfg), fd.name);
  window.xoqCamera = view;
  window.addEventListener("pagehide", () => view?.close());
  requestAnimationFrame(loop);

  let lastFrames = 0;
  let lastTick = performance.now();
  setInterval(() => {
    const now = performance.now();
    const fps = ((frames - lastFrames) * 1000) / (now - lastTick);
    lastFrames = frames;
    lastTick = now;
    const k = fd.info?.depth;
    const l = latency.median();
    const c = view?.status();
    stats.textContent = [
      `broadcast    ${fd.name}`,
      `points       ${points.toLocaleString("en")} of ${uploaded ? (uploaded.image.width * uploaded.image.height).toLocaleString("en") : "–"}`,
      `frames       ${frames} drawn, ~${fps.toFixed(0)}/s, ${fd.skipped} skipped`,
      `frame        ${uploaded?.seq ?? "–"}, ${l === undefined ? "–" : `${l.toFixed(0)} ms`} capture → drawn`,
      `intrinsics   ${k ? `${k.width}×${k.height}, fx ${k.fx.toFixed(1)} fy ${k.fy.toFixed(1)}` : "– (waiting for the catalog)"}`,
      ...(k ? [`             ppx ${k.ppx.toFixed(1)} ppy ${k.ppy.toFixed(1)} (${k.model})`] : []),
      `colour by    ${state.colorBy}${colorBy === "picture" && state.colorBy !== "picture" ? " (no picture yet)" : ""}${syncMs === null ? "" : syncMs === 0 ? ", depth of the same capture" : `, depth ${syncMs.toFixed(0)} ms off`}`,
      `colour       ${c ? `${c.link}, ${c.framesShown} frames shown` : "–"}`,
      `WebGL        ${glErrors ? `${glErrors} errors (last ${lastError})` : "no errors"}`,
    ].join("\n");
  }, 1000);
}

window.xoqCloud = {
  get frames() {
    return frames;
  },
  get points() {
    return points;
  },
  get width() {
    return uploaded?.image.width ?? null;
  },
  get height() {
    return uploaded?.image.height ?? null;
  },
  get lastSeq() {
    return uploaded?.seq ?? null;
  },
  get scale() {
    return feed?.info?.scale ?? null;
  },
  get intrinsics() {
    return feed?.info?.depth ?? null;
  },
  get colorBy() {
    return state.colorBy as ColorBy;
  },
  get colorFrames() {
    return colorFrames;
  },
  get pairedFrames() {
    return pairedFrames;
  },
  get syncMs() {
    return syncMs;
  },
  get glErrors() {
    return glErrors;
  },
  get latencyMs() {
    return latency.median() ?? null;
  },
  setColorBy,
  scene,
};

main().catch((e) => {
  if (window.xoqState.kind !== "error") setStatus(`error: ${(e as Error).message ?? e}`, "error");
});

// Shared by the depth pages (realsense_viewer, realsense_pointcloud): the depth camera's
// broadcast on the relay, read with the page's own relay session. Its `catalog.json` gives
// the scale and intrinsics (`xoq.depth`); its `depth` track gives one frame per group,
// `timestamp_us u64 BE | seq u64 BE | depth blob`, decoded here newest first: frames that
// arrive while one is decoding replace each other, so a slow page skips frames rather than
// falling behind. The feed also says, on the status line, what is missing when nothing shows.
import {
  DEPTH_TRACK,
  type DepthImage,
  type DepthInfo,
  type Relay,
  TrackReader,
  decodeDepth,
  depthInfoFromCatalog,
  parseDepthTrackFrame,
} from "../src/index";
import { type PageConfig, connectOrExplain, loadConfig, noPublisher, setStatus } from "./common";

/** A connected page waits this long for the broadcast's announcement (as waitForPublisher). */
const PUBLISHER_WAIT_MS = 4000;
/** An announced broadcast must give a depth frame within this long, or the page says why not. */
const FIRST_FRAME_WAIT_MS = 8000;
/** No new frame for this long while frames were coming: the stream stalled. */
const STALL_MS = 1500;

/** Names of the blob's codec byte. */
export const CODEC_NAMES = ["raw", "RVL", "RVL + deflate"];

/** One decoded frame of the depth track. */
export interface DepthFrame {
  /** Frame number (the server counts every capture). */
  seq: number;
  /** Capture time, µs since the Unix epoch (the camera's clock). */
  timestampUs: number;
  image: DepthImage;
  /** Bytes of the depth blob (header included), and its codec byte. */
  blobBytes: number;
  codec: number;
  /** How long decoding took, ms. */
  decodeMs: number;
}

/** What to call while the feed runs. */
export interface FeedHooks {
  /** A new decoded frame (newest only). */
  onFrame(f: DepthFrame): void;
  /** The catalog arrived or changed; `info` is undefined when it describes no depth camera. */
  onCatalog?(info: DepthInfo | undefined): void;
  /** Status line while everything works. */
  okText(feed: DepthFeed): string;
  /** What the page needs from the catalog before it can show anything (the point cloud: intrinsics). */
  needsInfo?: boolean;
}

/** The depth track of one broadcast, read and decoded; made by {@link startDepthFeed}. */
export class DepthFeed {
  /** Decoded frames. */
  frames = 0;
  /** Track frames received (some are replaced by newer ones before they are decoded). */
  received = 0;
  /** Captures never shown: gaps in the frame numbers of decoded frames. */
  skipped = 0;
  decodeErrors = 0;
  lastError: string | undefined;
  /** The newest catalog (parsed JSON), and the depth camera it describes. */
  catalog: unknown;
  info: DepthInfo | undefined;
  latest: DepthFrame | undefined;
  announced = false;
  /** Decode each newest frame as it comes (off while a page picks frames with {@link decodeAt}). */
  decodeNewest = true;
  /** How many received frames to keep, undecoded, for {@link decodeAt} (0: none). */
  keepRecent = 0;
  #recent: { ts: number; payload: Uint8Array }[] = [];
  #pending: Uint8Array | undefined;
  #wake: (() => void) | undefined;
  #lastAt = 0;
  #connectedAt: number | undefined;
  #announcedAt: number | undefined;
  #everConnected = false;
  #everAnnounced = false;

  constructor(
    readonly cfg: PageConfig,
    readonly name: string,
    readonly relay: Relay,
    private readonly hooks: FeedHooks,
  ) {}

  /** Read the catalog, the depth track and the announcement; keep the status line current. */
  run(): void {
    const handle = this.relay.announcedBroadcast(this.name);
    window.addEventListener("pagehide", () => handle.close());
    const follow = (): void => {
      const now = performance.now();
      this.announced = handle.active.peek() !== undefined;
      if (this.announced) {
        this.#announcedAt ??= now;
        this.#everAnnounced = true;
      } else {
        this.#announcedAt = undefined;
      }
      if (this.relay.state === "connected") {
        this.#connectedAt ??= now;
        this.#everConnected = true;
      } else {
        this.#connectedAt = undefined;
      }
      this.showStatus();
    };
    handle.active.subscribe(follow);
    this.relay.addEventListener("state", follow);
    setInterval(follow, 250);
    follow();

    // The catalog: each frame is the whole document; a new one replaces the last.
    const catalogReader = new TrackReader(handle, this.name, "catalog.json");
    void (async () => {
      for (;;) {
        const payload = await catalogReader.next();
        if (payload === undefined) return;
        try {
          this.catalog = JSON.parse(new TextDecoder().decode(payload));
        } catch {
          this.catalog = null;
        }
        this.info = depthInfoFromCatalog(this.catalog);
        this.hooks.onCatalog?.(this.info);
        this.showStatus();
      }
    })();

    // The depth track: keep only the newest frame for the decoder.
    const depthReader = new TrackReader(handle, this.name, DEPTH_TRACK);
    void (async () => {
      for (;;) {
        const payload = await depthReader.next();
        if (payload === undefined) return;
        this.received++;
        if (this.keepRecent > 0 && payload.length >= 16) {
          const ts = Number(new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, false));
          this.#recent.push({ ts, payload });
          if (this.#recent.length > this.keepRecent) this.#recent.splice(0, this.#recent.length - this.keepRecent);
        }
        if (!this.decodeNewest) continue;
        this.#pending = payload;
        this.#wake?.();
      }
    })();
    void this.#decodeLoop();
  }

  async #decodeLoop(): Promise<void> {
    for (;;) {
      if (this.#pending === undefined) await new Promise<void>((r) => (this.#wake = r));
      this.#wake = undefined;
      const payload = this.#pending;
      this.#pending = undefined;
      if (payload === undefined) continue;
      const frame = await this.#decode(payload);
      if (frame) this.hooks.onFrame(frame);
      this.showStatus();
    }
  }

  // Decode one track frame and count it; undefined (and counted) when it is damaged.
  async #decode(payload: Uint8Array): Promise<DepthFrame | undefined> {
    try {
      const t0 = performance.now();
      const f = parseDepthTrackFrame(payload);
      const image = await decodeDepth(f.blob);
      const frame: DepthFrame = {
        seq: Number(f.seq),
        timestampUs: Number(f.timestampUs),
        image,
        blobBytes: f.blob.length,
        codec: f.blob[0]!,
        decodeMs: performance.now() - t0,
      };
      if (this.latest && frame.seq > this.latest.seq + 1) this.skipped += frame.seq - this.latest.seq - 1;
      this.latest = frame;
      this.frames++;
      this.#lastAt = performance.now();
      this.lastError = undefined;
      return frame;
    } catch (e) {
      this.decodeErrors++;
      this.lastError = e instanceof Error ? e.message : String(e);
      return undefined;
    }
  }

  /**
   * Decode the kept frame (see {@link keepRecent}) captured nearest to `timestampUs`, if one
   * is within `toleranceUs`: the depth of the capture a colour frame shows.
   */
  async decodeAt(timestampUs: number, toleranceUs: number): Promise<DepthFrame | undefined> {
    let best: { ts: number; payload: Uint8Array } | undefined;
    for (const r of this.#recent) {
      if (!best || Math.abs(r.ts - timestampUs) < Math.abs(best.ts - timestampUs)) best = r;
    }
    if (!best || Math.abs(best.ts - timestampUs) > toleranceUs) return undefined;
    const frame = await this.#decode(best.payload);
    this.showStatus();
    return frame;
  }

  /** The capture time of the colour video's presentation time 0 (the catalog's `xoq.epochUs`). */
  get epochUs(): number | undefined {
    const e = (this.catalog as { xoq?: { epochUs?: unknown } } | null | undefined)?.xoq?.epochUs;
    return typeof e === "number" && Number.isFinite(e) ? e : undefined;
  }

  /** Whether frames stopped coming (after some did). */
  get stalled(): boolean {
    return this.frames > 0 && performance.now() - this.#lastAt > STALL_MS;
  }

  /** Put on the status line what the page shows, or why it shows nothing. */
  showStatus(): void {
    const { cfg, name, relay } = this;
    const now = performance.now();
    if (relay.state !== "connected") {
      if (relay.state === "closed") {
        setStatus(`the relay session is closed: ${relay.reason}; reload to reconnect`, "error");
      } else {
        setStatus(`${this.#everConnected ? "lost the relay" : "relay session down"}: ${relay.reason ?? "connecting"}; reconnecting …`, "error");
      }
    } else if (!this.announced) {
      if (this.#everAnnounced) {
        setStatus(`the depth camera "${name}" stopped publishing on ${cfg.relay}; it shows again as soon as it is back`, "error");
      } else if (now - (this.#connectedAt ?? now) > PUBLISHER_WAIT_MS) {
        noPublisher(
          name,
          cfg.relay,
          "nothing announces this depth camera (check the name, or start `xoq demo` or `xoq depth-server sim:depth --relay <url> --moq <path>`); it shows as soon as it appears",
        );
      } else {
        setStatus(`connected to ${cfg.relay}; looking for the depth camera "${name}" …`);
      }
    } else if (this.frames === 0 || (this.hooks.needsInfo && this.info === undefined)) {
      if (now - (this.#announcedAt ?? now) > FIRST_FRAME_WAIT_MS) {
        setStatus(`the broadcast "${name}" is published but shows no depth: ${this.#whyNothing()}`, "error");
      } else {
        setStatus(`depth camera "${name}" found; ${this.catalog === undefined ? "reading its catalog" : "waiting for the first depth frame"} …`);
      }
    } else if (this.stalled) {
      setStatus(`"${name}": the depth stream stalled (no new frame for ${(STALL_MS / 1000).toFixed(1)} s)`, "info");
    } else if (this.lastError !== undefined) {
      setStatus(`"${name}": a depth frame could not be decoded: ${this.lastError}`, "error");
    } else {
      setStatus(this.hooks.okText(this), "ok");
    }
  }

  #whyNothing(): string {
    if (this.catalog === undefined) return "no catalog.json arrived (is it a hang-format broadcast?)";
    if (this.catalog === null) return "its catalog.json is not JSON";
    if (this.info === undefined) {
      return (this.catalog as { xoq?: { depth?: unknown } })?.xoq?.depth === undefined
        ? "its catalog describes no depth camera (no xoq.depth: a colour-only camera?)"
        : "its catalog's depth description lacks the scale or the intrinsics";
    }
    if (this.received === 0) return `the catalog arrived but no frames on track "${DEPTH_TRACK}"`;
    return `${this.received} depth frames arrived but none could be decoded${this.lastError ? ` (${this.lastError})` : ""}`;
  }
}

/**
 * Start the depth pages' feed: the configuration, the relay session (the status line says
 * when the relay is down), and the broadcast (`?depth=` or the demo's). Returns undefined when
 * there is no broadcast to show (the status line says why).
 */
export async function startDepthFeed(hooks: FeedHooks): Promise<DepthFeed | undefined> {
  const cfg = await loadConfig();
  const relayEl = document.getElementById("relay");
  if (relayEl) relayEl.textContent = `relay ${cfg.relay}`;
  if (!cfg.depth) {
    setStatus(
      "this demo has no depth camera: its /config.json names no depth broadcast (an older `xoq demo`?). " +
        "Add ?depth=<broadcast> to the URL to watch one.",
      "error",
    );
    return undefined;
  }
  const nameEl = document.getElementById("name");
  if (nameEl) nameEl.textContent = cfg.depth;
  window.xoqState.depth = cfg.depth;
  const relay = await connectOrExplain(cfg);
  const feed = new DepthFeed(cfg, cfg.depth, relay, hooks);
  feed.run();
  return feed;
}

// --- colour maps ---------------------------------------------------------------------------

/** Depth colour map range, metres: nearer is the first colour, farther the last. */
export const NEAR_M = 0.3;
export const FAR_M = 4.0;

/** Google's Turbo colour map (polynomial approximation, t in 0..1), as 0..1 RGB. */
export function turbo(t: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, t));
  const r = 0.13572138 + x * (4.6153926 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943))));
  const g = 0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604))));
  const b = 0.1066733 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973))));
  const c = (v: number): number => Math.min(1, Math.max(0, v));
  return [c(r), c(g), c(b)];
}

/** The same map in GLSL (`vec3 turbo(float t)`). */
export const TURBO_GLSL = `
vec3 turbo(float t) {
  float x = clamp(t, 0.0, 1.0);
  vec4 v4 = vec4(1.0, x, x * x, x * x * x);
  vec2 v2 = v4.zw * v4.z;
  return clamp(vec3(
    dot(v4, vec4(0.13572138, 4.61539260, -42.66032258, 132.13108234)) + dot(v2, vec2(-152.94239396, 59.28637943)),
    dot(v4, vec4(0.09140261, 2.19418839, 4.84296658, -14.18503333)) + dot(v2, vec2(4.27729857, 2.82956604)),
    dot(v4, vec4(0.10667330, 12.64194608, -60.58204836, 110.36276771)) + dot(v2, vec2(-89.90310912, 27.34824973))
  ), 0.0, 1.0);
}`;

/**
 * Every 16-bit depth value's colour as a canvas pixel (RGBA in memory order, read as one
 * little-endian u32): Turbo over NEAR_M..FAR_M, black for 0 (no measurement).
 */
export function depthLut(scale: number): Uint32Array {
  const lut = new Uint32Array(65536);
  for (let v = 1; v < 65536; v++) {
    const [r, g, b] = turbo((v * scale - NEAR_M) / (FAR_M - NEAR_M));
    lut[v] = (255 << 24) | (Math.round(b * 255) << 16) | (Math.round(g * 255) << 8) | Math.round(r * 255);
  }
  lut[0] = 0xff000000;
  return lut;
}

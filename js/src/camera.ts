// Camera broadcasts in a browser: a thin wrapper around the stock MoQ player, the
// `<moq-watch>` element of @moq/watch. The element connects, reads the hang catalog
// (`catalog.json`), subscribes to the video track and decodes it with WebCodecs; this module
// only builds it, reads its state into one plain object, and tears it down.
//
// Browser only (custom elements, WebCodecs): it is the package entry `xoq/camera`, separate
// from `xoq`, so importing `xoq` in Node never loads it.
import MoqWatch from "@moq/watch/element";

/** Options for {@link watchCamera}. */
export interface CameraOptions {
  /**
   * When the element downloads video: `"always"` (the default here), `"never"`, or a CSS
   * length such as `"200px"`: while the canvas is that close to the viewport and the tab is
   * visible (the element's own default is `"20%"`).
   */
  visible?: string;
  /** Latency target: `"real-time"` (default) or a buffer in milliseconds. */
  latency?: number | "real-time";
  /**
   * How long the element keeps reconnecting after losing the relay before giving up, in ms;
   * 0 (the default here) retries forever. The element's own default is 10 s.
   */
  reconnectTimeoutMs?: number;
  /** Canvas size until the first frame sets it to the video's (default 640 × 360). */
  width?: number;
  height?: number;
}

/** What the player is doing, read from the element's signals. */
export interface CameraStatus {
  /** The element's relay connection (it reconnects on its own). */
  link: "connecting" | "connected" | "disconnected";
  /** Set when the element gave up reconnecting: the last connection error. */
  failed?: string;
  /** A publisher announces the broadcast on the relay. */
  announced: boolean;
  /** The catalog arrived and names a video track. */
  catalog: boolean;
  /** The video track the player chose, and its codec (from the catalog). */
  track?: string;
  codec?: string;
  /** Why no rendition can be played (e.g. `"unsupported"`: this browser cannot decode it). */
  error?: string;
  /** Size of the picture (catalog `display`, else the decoded frames). */
  width?: number;
  height?: number;
  /** Encoded frames received and handed to the decoder, and their bytes. */
  framesReceived: number;
  bytesReceived: number;
  /** Decoded frames painted on the canvas. */
  framesShown: number;
  /** No new frame for half a second while playing. */
  stalled: boolean;
}

/** A camera player on the page, made by {@link watchCamera}. */
export interface CameraView {
  /** The `<moq-watch>` element (already in the container). */
  readonly element: MoqWatch;
  /** The canvas the element paints into. */
  readonly canvas: HTMLCanvasElement;
  readonly relayUrl: string;
  readonly name: string;
  /** The current state. */
  status(): CameraStatus;
  /** Frames painted so far (the same as `status().framesShown`). */
  framesShown(): number;
  /** Call `fn` whenever the state changes (at most once per microtask); returns an unsubscribe. */
  onChange(fn: (status: CameraStatus) => void): () => void;
  /** Disconnect and remove the element. */
  close(): void;
}

/**
 * Play the camera broadcast `name` from the relay at `relayUrl` (its root with the auth path,
 * e.g. `http://127.0.0.1:4443/anon`; an `http://` development relay's certificate is fetched
 * and pinned by the player) in a new `<moq-watch>` appended to `container`.
 *
 * The broadcast is in hang format: a `catalog.json` track describing the video renditions and
 * a video track per rendition (e.g. H.264 in the legacy container, one group per GoP).
 */
export function watchCamera(
  container: HTMLElement,
  relayUrl: string,
  name: string,
  opts: CameraOptions = {},
): CameraView {
  const element = new MoqWatch();
  element.connection.delay = { ...element.connection.delay, timeout: opts.reconnectTimeoutMs ?? 0 };
  element.setAttribute("catalog-format", "hang");
  element.setAttribute("visible", opts.visible ?? "always");
  element.setAttribute("muted", "");
  element.setAttribute("latency", String(opts.latency ?? "real-time"));
  const canvas = document.createElement("canvas");
  canvas.width = opts.width ?? 640;
  canvas.height = opts.height ?? 360;
  element.appendChild(canvas);
  container.appendChild(element);
  element.setAttribute("url", relayUrl);
  element.setAttribute("name", name);

  let shown = 0;
  let failed: string | undefined;
  const listeners = new Set<(s: CameraStatus) => void>();
  let queued = false;
  const notify = (): void => {
    if (queued || listeners.size === 0) return;
    queued = true;
    queueMicrotask(() => {
      queued = false;
      const s = status();
      for (const fn of listeners) fn(s);
    });
  };

  const status = (): CameraStatus => {
    const source = element.video.source.out;
    const display = element.video.out.display.peek();
    const stats = element.video.out.stats.peek();
    const s: CameraStatus = {
      link: element.connection.status.peek(),
      announced: element.broadcast.out.active.peek() !== undefined,
      catalog: source.catalog.peek() !== undefined,
      framesReceived: stats?.frameCount ?? 0,
      bytesReceived: stats?.bytesReceived ?? 0,
      framesShown: shown,
      stalled: element.video.out.stalled.peek() && shown > 0,
    };
    const track = source.track.peek();
    const codec = source.config.peek()?.codec;
    const error = source.error.peek();
    if (failed !== undefined) s.failed = failed;
    if (track !== undefined) s.track = track;
    if (codec !== undefined) s.codec = codec;
    if (error !== undefined) s.error = error;
    if (display) {
      s.width = display.width;
      s.height = display.height;
    }
    return s;
  };

  const unsubscribe = [
    element.connection.status.subscribe(notify),
    element.broadcast.out.active.subscribe(notify),
    element.video.source.out.catalog.subscribe(notify),
    element.video.source.out.track.subscribe(notify),
    element.video.source.out.config.subscribe(notify),
    element.video.source.out.error.subscribe(notify),
    element.video.out.display.subscribe(notify),
    element.video.out.stats.subscribe(notify),
    element.video.out.stalled.subscribe(notify),
    // The renderer paints at most once per animation frame; each new timestamp is a frame shown.
    element.renderer.out.timestamp.subscribe((t) => {
      if (t !== undefined) shown++;
      notify();
    }),
  ];
  element.connection.closed.then(
    () => {},
    (e: unknown) => {
      failed = e instanceof Error ? e.message : String(e);
      notify();
    },
  );

  let closed = false;
  return {
    element,
    canvas,
    relayUrl,
    name,
    status,
    framesShown: () => shown,
    onChange(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    close() {
      if (closed) return;
      closed = true;
      for (const u of unsubscribe) u();
      listeners.clear();
      element.remove();
      element.signals.close();
    },
  };
}

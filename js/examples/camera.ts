// The demo camera (or any hang-format camera broadcast on the relay), played by the stock MoQ
// player through xoq's `watchCamera` wrapper, with the link state and what is being shown.
import { type CameraStatus, type CameraView, watchCamera } from "../src/camera";
import { scrubToken } from "../src/moq";
import { dialUrl, loadConfig, noPublisher, setStatus } from "./common";

/** The relay must answer within this long before the page calls it unreachable (as connectOrExplain). */
const RELAY_WAIT_MS = 8000;
/** A connected page waits this long for the broadcast's announcement (as waitForPublisher). */
const PUBLISHER_WAIT_MS = 4000;
/** An announced camera must show a frame within this long, or the page says what is missing. */
const FIRST_FRAME_WAIT_MS = 8000;

const stats = document.getElementById("stats") as HTMLElement;
const state = window.xoqState;
Object.assign(state, {
  camera: null as string | null,
  link: "connecting",
  announced: false,
  width: null as number | null,
  height: null as number | null,
  fps: 0,
  framesShown: 0,
  framesReceived: 0,
});

declare global {
  interface Window {
    /** The player, for tests and the curious. */
    xoqCamera?: CameraView;
  }
}

async function main(): Promise<void> {
  const cfg = await loadConfig();
  const relayEl = document.getElementById("relay");
  if (relayEl) relayEl.textContent = `relay ${cfg.relay}`;
  if (!cfg.camera) {
    setStatus(
      "this demo has no camera: its /config.json names no camera broadcast (an older `xoq demo`?). " +
        "Add ?camera=<broadcast> to the URL to watch one.",
      "error",
    );
    stats.textContent = "no camera";
    return;
  }
  const name = cfg.camera;
  state.camera = name;
  const nameEl = document.getElementById("name");
  if (nameEl) nameEl.textContent = name;

  // The player dials the relay with the page's token (if any); the page shows cfg.relay.
  const view = watchCamera(document.getElementById("view") as HTMLElement, dialUrl(cfg), name);
  window.xoqCamera = view;
  window.addEventListener("pagehide", () => view.close());

  const start = performance.now();
  let connectedAt: number | undefined; // the current connection's start
  let everConnected = false;
  let announcedAt: number | undefined;
  let everAnnounced = false;
  let fps = 0;

  const show = (s: CameraStatus): void => {
    const now = performance.now();
    if (s.link === "connected") {
      connectedAt ??= now;
      everConnected = true;
    } else {
      connectedAt = undefined;
    }
    if (s.announced) {
      announcedAt ??= now;
      everAnnounced = true;
    } else {
      announcedAt = undefined;
    }
    Object.assign(state, {
      link: s.link,
      connected: s.link === "connected",
      announced: s.announced,
      width: s.width ?? null,
      height: s.height ?? null,
      fps,
      framesShown: s.framesShown,
      framesReceived: s.framesReceived,
    });

    const size = s.width && s.height ? `${s.width}×${s.height}` : "–";
    stats.textContent = [
      `broadcast   ${name}`,
      `link        ${s.link}${s.announced ? ", publisher present" : ""}`,
      `track       ${s.track ?? "–"}${s.codec ? ` (${s.codec})` : ""}`,
      `resolution  ${size}`,
      `frame rate  ${s.framesShown ? `~${fps.toFixed(0)} frames/s` : "–"}`,
      `frames      ${s.framesShown} shown, ${s.framesReceived} received (${(s.bytesReceived / 1024).toFixed(0)} KiB)`,
    ].join("\n");

    if (s.failed !== undefined) {
      setStatus(`cannot reach the relay at ${cfg.relay}: ${scrubToken(s.failed, dialUrl(cfg))}. Is \`xoq demo\` (or \`xoq relay\`) running?`, "error");
    } else if (s.link !== "connected") {
      if (everConnected) {
        setStatus(`lost the relay at ${cfg.relay}; reconnecting …`, "error");
      } else if (now - start > RELAY_WAIT_MS) {
        setStatus(
          `cannot reach the relay at ${cfg.relay}: no answer in ${RELAY_WAIT_MS / 1000} s (still trying). ` +
            "Is `xoq demo` (or `xoq relay`) running?",
          "error",
        );
      } else {
        setStatus(`connecting to ${cfg.relay} …`);
      }
    } else if (!s.announced) {
      if (everAnnounced) {
        setStatus(`the camera "${name}" stopped publishing on ${cfg.relay}; it plays again as soon as it is back`, "error");
      } else if (now - (connectedAt ?? now) > PUBLISHER_WAIT_MS) {
        noPublisher(name, cfg.relay, "nothing announces this camera (check the name, or start the camera's server); it plays as soon as it appears");
      } else {
        setStatus(`connected to ${cfg.relay}; looking for the camera "${name}" …`);
      }
    } else if (s.error !== undefined) {
      setStatus(`the camera "${name}" cannot be played here: ${s.error === "unsupported" ? `this browser cannot decode ${s.codec ?? "its video"}` : s.error}`, "error");
    } else if (s.framesShown === 0) {
      if (now - (announcedAt ?? now) > FIRST_FRAME_WAIT_MS) {
        const what = !s.catalog
          ? "no usable catalog.json (hang format) arrived"
          : s.framesReceived === 0
            ? `the catalog arrived but no frames on track "${s.track ?? "?"}"`
            : `${s.framesReceived} frames arrived but none could be decoded`;
        setStatus(`the camera "${name}" is published but shows nothing: ${what}`, "error");
      } else {
        setStatus(`camera "${name}" found; ${s.catalog ? "waiting for the first frame" : "reading its catalog"} …`);
      }
    } else if (s.stalled) {
      setStatus(`playing "${name}": the video stalled (no new frame for half a second)`, "info");
    } else {
      setStatus(`playing "${name}" from ${cfg.relay}`, "ok");
    }
  };

  // Frame rate over the last second; the tick also runs the waits above when nothing changes.
  let lastShown = 0;
  let lastAt = performance.now();
  setInterval(() => {
    const s = view.status();
    const now = performance.now();
    fps = ((s.framesShown - lastShown) * 1000) / (now - lastAt);
    lastShown = s.framesShown;
    lastAt = now;
    show(s);
  }, 1000);
  view.onChange(show);
  show(view.status());
}

main().catch((e) => {
  if (window.xoqState.kind !== "error") setStatus(`error: ${(e as Error).message ?? e}`, "error");
});

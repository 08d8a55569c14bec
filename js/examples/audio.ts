// The demo microphone (or any hang-format Opus broadcast on the relay), played by the stock MoQ
// player, with a level meter and the pitch it hears (an AnalyserNode on the player's output).
import MoqWatch from "@moq/watch/element";
import { dialUrl, loadConfig, setStatus } from "./common";

const stats = document.getElementById("stats") as HTMLElement;
const state = window.xoqState;
Object.assign(state, {
  audio: null as string | null,
  /** The player's relay connection. */
  player: "connecting" as string,
  announced: false,
  codec: null as string | null,
  sampleRate: null as number | null,
  bytesReceived: 0,
  /** Loudest frequency the analyser hears, Hz (0: nothing yet). */
  peakHz: 0,
  /** RMS level of what the player outputs, 0..1. */
  level: 0,
  playing: false,
});

declare global {
  interface Window {
    xoqAudio?: MoqWatch;
  }
}

async function main(): Promise<void> {
  const cfg = await loadConfig();
  const relayEl = document.getElementById("relay");
  if (relayEl) relayEl.textContent = `relay ${cfg.relay}`;
  const name = cfg.audio;
  if (!name) {
    setStatus("this demo has no microphone: its /config.json names no audio broadcast. Add ?audio=<broadcast> to the URL.", "error");
    return;
  }
  state.audio = name;
  const nameEl = document.getElementById("name");
  if (nameEl) nameEl.textContent = name;

  const el = new MoqWatch();
  el.connection.delay = { ...el.connection.delay, timeout: 0 };
  el.setAttribute("catalog-format", "hang");
  el.setAttribute("latency", "real-time");
  el.setAttribute("muted", "");
  // The element wants a canvas even for audio-only broadcasts; keep it out of sight.
  const canvas = document.createElement("canvas");
  canvas.width = 1;
  canvas.height = 1;
  canvas.style.display = "none";
  el.appendChild(canvas);
  document.body.appendChild(el);
  el.setAttribute("url", dialUrl(cfg));
  el.setAttribute("name", name);
  window.xoqAudio = el;
  window.addEventListener("pagehide", () => el.remove());

  const button = document.getElementById("play") as HTMLButtonElement;
  const listen = (): void => {
    el.removeAttribute("muted");
    state.playing = true;
    button.textContent = "Listening";
    button.disabled = true;
  };
  button.addEventListener("click", listen);
  // Tests (and kiosks) start without a click: ?autoplay=1 with a browser that allows it.
  if (new URLSearchParams(location.search).get("autoplay")) listen();

  let analyser: AnalyserNode | undefined;
  let tapped: AudioNode | undefined;
  const freq = new Float32Array(2048);
  const time = new Float32Array(2048);
  const tick = (): void => {
    const root = el.audio.out.root.peek();
    const ctx = el.audio.out.context.peek();
    if (root && ctx && root !== tapped) {
      analyser = ctx.createAnalyser();
      analyser.fftSize = 4096;
      root.connect(analyser);
      tapped = root;
    }
    const conn = el.connection.status.peek();
    state.player = conn;
    state.connected = conn === "connected";
    const cat = el.audio.source.out.config.peek();
    if (cat) {
      state.codec = cat.codec;
      state.sampleRate = cat.sampleRate;
    }
    state.bytesReceived = el.audio.out.stats.peek()?.bytesReceived ?? 0;
    if (analyser && ctx) {
      analyser.getFloatFrequencyData(freq);
      analyser.getFloatTimeDomainData(time);
      let best = 0;
      for (let i = 1; i < analyser.frequencyBinCount; i++) if (freq[i] > freq[best]) best = i;
      const rms = Math.sqrt(time.reduce((a, v) => a + v * v, 0) / time.length);
      state.level = rms;
      state.peakHz = rms > 0.01 ? Math.round((best * ctx.sampleRate) / analyser.fftSize) : 0;
      (document.getElementById("level") as HTMLElement).style.width = `${Math.min(100, rms * 200)}%`;
    }
    stats.textContent =
      `link ${state.player} · codec ${state.codec ?? "?"} · ${state.sampleRate ?? "?"} Hz · ` +
      `${state.bytesReceived} bytes · level ${(state.level as number).toFixed(3)} · pitch ${state.peakHz} Hz`;
    if (!state.playing) setStatus("connected: press Listen to hear it", state.connected ? "ok" : "info");
    else if ((state.level as number) > 0.01) setStatus(`playing ${name}`, "ok");
    else setStatus(state.connected ? "waiting for sound…" : `connecting to ${cfg.relay}…`, "info");
  };
  setInterval(tick, 100);
}

main().catch((e) => setStatus(`error: ${e instanceof Error ? e.message : String(e)}`, "error"));

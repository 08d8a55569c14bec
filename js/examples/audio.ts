// The demo microphone (or any hang-format Opus broadcast on the relay), played by the stock MoQ
// player, with a level meter and the pitch it hears (an AnalyserNode on the player's output).
import MoqWatch from "@moq/watch/element";
import { Relay, TrackReader, type TrackWriter, encodeVarint, publishTrack } from "../src/index";
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
  /** Push-to-talk: the microphone is being sent. */
  talking: false,
  /** Opus packets published while talking. */
  talkPackets: 0,
  talkError: null as string | null,
  /** The robot speaker's status (its `speaker` track). */
  speaker: null as Record<string, unknown> | null,
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

  // Push-to-talk and the speaker's status, over the page's own relay session.
  let relay: Relay | undefined;
  const session = (): Relay => {
    relay ??= Relay.start(dialUrl(cfg));
    return relay;
  };
  void followSpeaker(session(), name);
  const talk = document.getElementById("talk") as HTMLButtonElement;
  let stop: (() => void) | undefined;
  const down = async (): Promise<void> => {
    if (stop) return;
    try {
      stop = await startTalking(session(), name);
    } catch (e) {
      state.talkError = e instanceof Error ? e.message : String(e);
      setStatus(`cannot talk: ${state.talkError}`, "error");
    }
  };
  const up = (): void => {
    stop?.();
    stop = undefined;
  };
  talk.addEventListener("pointerdown", () => void down());
  talk.addEventListener("pointerup", up);
  talk.addEventListener("pointerleave", up);
  window.xoqTalk = { start: down, stop: up };
}

declare global {
  interface Window {
    /** Push-to-talk without a pointer (tests, kiosks). */
    xoqTalk?: { start(): Promise<void>; stop(): void };
  }
}

/** Show the robot speaker's status track (JSON every 250 ms). */
async function followSpeaker(relay: Relay, name: string): Promise<void> {
  const reader = new TrackReader(relay, name, "speaker");
  const el = document.getElementById("speaker");
  for (;;) {
    const frame = await reader.next();
    if (!frame) return;
    try {
      const s = JSON.parse(new TextDecoder().decode(frame)) as Record<string, unknown>;
      state.speaker = s;
      if (el) {
        el.textContent = s.relayWrites
          ? `Robot speaker: ${s.talking ? "someone is talking" : "free"}, level ${Number(s.level).toFixed(3)}.`
          : "This robot's speaker does not take relay talkers (its server runs with --moq-writes off).";
      }
    } catch {
      // A malformed status is skipped; the next one comes in 250 ms.
    }
  }
}

/**
 * Capture this browser's microphone and publish it as Opus (20 ms, 48 kHz mono) in hang's
 * legacy framing (varint µs timestamp + packet) on `<name>/talk/<id>`. Returns `stop`.
 */
async function startTalking(relay: Relay, name: string): Promise<() => void> {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, sampleRate: 48000, echoCancellation: true, noiseSuppression: true },
  });
  const track = media.getAudioTracks()[0];
  const id = Math.random().toString(36).slice(2, 10);
  const { broadcast, writer } = publishTrack(relay, `${name}/talk/${id}`, "audio");
  let t0: number | undefined;
  const send = (w: TrackWriter, chunk: EncodedAudioChunk): void => {
    const packet = new Uint8Array(chunk.byteLength);
    chunk.copyTo(packet);
    t0 ??= chunk.timestamp;
    const pts = encodeVarint(Math.max(0, chunk.timestamp - t0));
    const payload = new Uint8Array(pts.length + packet.length);
    payload.set(pts);
    payload.set(packet, pts.length);
    w.write(payload, true); // one group per packet, as the hang player and the server expect
    state.talkPackets = (state.talkPackets as number) + 1;
  };
  const encoder = new AudioEncoder({
    output: (chunk) => send(writer, chunk),
    error: (e) => {
      state.talkError = e.message;
    },
  });
  let configured = false;
  // MediaStreamTrackProcessor (Chromium) hands out AudioData; take channel 0 as mono.
  const Processor = (window as unknown as { MediaStreamTrackProcessor: new (o: { track: MediaStreamTrack }) => { readable: ReadableStream<AudioData> } }).MediaStreamTrackProcessor;
  const reader = new Processor({ track }).readable.getReader();
  let running = true;
  state.talking = true;
  void (async () => {
    while (running) {
      const { value, done } = await reader.read();
      if (done || !value) break;
      if (!configured) {
        encoder.configure({ codec: "opus", sampleRate: value.sampleRate, numberOfChannels: 1, bitrate: 64000, opus: { frameDuration: 20000 } } as AudioEncoderConfig);
        configured = true;
      }
      const mono = new Float32Array(value.numberOfFrames);
      value.copyTo(mono, { planeIndex: 0, format: "f32-planar" });
      encoder.encode(new AudioData({ format: "f32-planar", sampleRate: value.sampleRate, numberOfFrames: value.numberOfFrames, numberOfChannels: 1, timestamp: value.timestamp, data: mono }));
      value.close();
    }
  })();
  return () => {
    running = false;
    state.talking = false;
    void reader.cancel();
    track.stop();
    void encoder.flush().finally(() => {
      encoder.close();
      writer.close();
      broadcast.close();
    });
  };
}

main().catch((e) => setStatus(`error: ${e instanceof Error ? e.message : String(e)}`, "error"));

// The demo's pages in a real browser (Debian Chromium, driven by playwright-core) against a
// running `xoq demo`: simulated OpenArm and SO-101, embedded relay, pages served by the binary.
// Screenshots go to $XOQ_ARTIFACTS (default ../artifacts/browser).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const XOQ = process.env.XOQ_BIN ?? resolve(here, "../../target/debug/xoq");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = process.env.XOQ_ARTIFACTS ?? resolve(here, "../../artifacts/browser");
mkdirSync(ARTIFACTS, { recursive: true });

let demo;
let url;
let openarmMoq;
let browser;
let nativeUs;

before(async () => {
  const home = mkdtempSync(join(tmpdir(), "xoq-e2e-"));
  demo = spawn(XOQ, ["demo", "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"], {
    env: { ...process.env, XOQ_OFFLINE: "1", XOQ_HOME: home, XOQ_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: demo.stdout });
  url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("xoq demo printed no URL in 90 s")), 90_000);
    let section = "";
    lines.on("line", (l) => {
      const head = l.match(/^  (\S.*?)\s{2,}/);
      if (head) section = head[1].includes("OpenArm") ? "openarm" : head[1];
      const moq = l.match(/^\s+MoQ\s+(http\S+)/);
      if (moq && section === "openarm") openarmMoq = moq[1];
      const m = l.match(/^open in a browser: (\S+)/);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    demo.on("exit", (code) => fail(new Error(`xoq demo exited (${code}) before printing its URL`)));
  });
  // The native client's command -> reply latency through the same relay and demo, measured
  // before the browser starts, so the two measurements do not load each other.
  const native = execFileSync(XOQ, ["bench", "client", "--can", openarmMoq, "--count", "300"], {
    env: { ...process.env, XOQ_OFFLINE: "1", XOQ_LOG: "warn" },
  }).toString();
  nativeUs = Number(native.match(/can_p50_us=([\d.]+)/)[1]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      // Closed network: no background requests; WebGL on the CPU (no GPU here).
      "--disable-background-networking", "--disable-component-update", "--no-first-run",
      "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
      // Sound without a click, as a user's click would allow (the microphone page).
      "--autoplay-policy=no-user-gesture-required",
      // A fake microphone (Chromium's test tone) for push-to-talk, allowed without a prompt.
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    ],
  });
});

after(async () => {
  await browser?.close();
  demo?.kill("SIGTERM");
  for (const c of extra) c.kill("SIGTERM");
});

let tokens;
const extra = [];

// A relay that checks tokens, with a simulated OpenArm behind a server token, and a token
// for pages (publish and subscribe under its path); started on first use.
async function tokenRelay() {
  if (tokens) return tokens;
  const home = mkdtempSync(join(tmpdir(), "xoq-e2e-tok-"));
  const env = { ...process.env, XOQ_OFFLINE: "1", XOQ_HOME: home, XOQ_LOG: "warn" };
  const key = join(home, "relay.jwk");
  const started = (args, what) =>
    new Promise((ok, fail) => {
      const child = spawn(XOQ, args, { env, stdio: ["ignore", "pipe", "inherit"] });
      extra.push(child);
      const out = [];
      const timer = setTimeout(() => fail(new Error(`${what} did not start`)), 30_000);
      createInterface({ input: child.stdout }).on("line", (l) => {
        out.push(l);
        if (l === "ready") {
          clearTimeout(timer);
          ok(out);
        }
      });
      child.on("exit", (code) => fail(new Error(`${what} exited (${code})`)));
    });
  const lines = await started(["relay", "--listen", "127.0.0.1:0", "--auth-key", key], "relay --auth-key");
  const root = lines.map((l) => /^url: (http:\S+)$/.exec(l)?.[1]).find(Boolean);
  const token = (...args) => execFileSync(XOQ, ["token", "--key", key, ...args], { env }).toString().trim();
  const grant = ["--publish", "anon/e2e-tok", "--subscribe", "anon/e2e-tok"];
  await started(
    ["can-server", "sim:openarm", "--bind", "127.0.0.1:0", "--relay", `${root}?jwt=${token(...grant)}`, "--no-p2p", "--moq", "anon/e2e-tok", "--moq-writes", "on"],
    "can-server behind tokens",
  );
  tokens = { relayUrl: `${root}anon`, pageToken: token(...grant) };
  return tokens;
}

async function open(page, name) {
  const p = await browser.newPage({ viewport: { width: 1200, height: 700 } });
  p.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  // What the page logs, for tests that check it (WebGL errors, say).
  p.consoleLog = [];
  p.on("console", (m) => p.consoleLog.push({ type: m.type(), text: m.text() }));
  await p.goto(new URL(page, url).toString());
  return p;
}

async function waitState(p, fn, arg, timeout = 20_000) {
  try {
    await p.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    // Say what the page knew, so a failure in CI can be understood from the log alone.
    const state = await p.evaluate(() => JSON.stringify(window.xoqState)).catch(() => "?");
    throw new Error(`${e.message}\npage state: ${state}`);
  }
}

async function shot(p, name) {
  await p.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

test("index lists the pages", async () => {
  const p = await open("index.html", "index");
  const links = await p.$$eval("a", (as) => as.map((a) => a.getAttribute("href")));
  for (const page of [
    "openarm.html", "urdf_viewer.html", "can_cmd_test.html", "subscribe.html", "camera.html", "audio.html",
    "realsense_viewer.html", "realsense_pointcloud.html",
  ]) {
    assert.ok(links.includes(page), `index links ${page}`);
  }
  await shot(p, "index");
  await p.close();
});

test("openarm: a slider's command moves the simulated motor and the view follows", async () => {
  const p = await open("openarm.html", "openarm");
  await waitState(p, () => window.xoqState.kind === "ok");
  await p.click("#enable");
  // Joint 2 pitches the arm over, so the screenshot shows the move.
  await p.$eval("#j2", (s) => {
    s.value = "0.6";
    s.dispatchEvent(new Event("input"));
  });
  await waitState(p, () => Math.abs(window.xoqState.joints[1] - 0.6) < 0.05);
  await waitState(p, () => typeof window.xoqState.latencyMs === "number");
  await p.waitForTimeout(1500); // let the latency window fill
  const s = await p.evaluate(() => window.xoqState);
  assert.ok(s.fps > 0, "state frames arrive");
  await shot(p, "openarm");
  await p.click("#disable");
  await p.close();
  const report =
    `command published -> motor state received, through the relay (median)\n` +
    `browser (openarm.html, @moq/net over WebTransport): ${s.latencyMs.toFixed(2)} ms\n` +
    `native Rust client (xoq bench client):              ${(nativeUs / 1000).toFixed(2)} ms\n`;
  writeFileSync(join(ARTIFACTS, "latency.txt"), report);
  console.log(report);
});

test("urdf viewer: writing a goal position moves the servo and the model", async () => {
  const p = await open("urdf_viewer.html", "urdf");
  await waitState(p, () => window.xoqState.kind === "ok" && window.xoqState.reads > 6);
  const before = await p.evaluate(() => window.xoqState.positions[1]);
  assert.equal(typeof before, "number");
  await p.$eval("#servo1", (s) => {
    s.value = "0.8";
    s.dispatchEvent(new Event("input"));
  });
  // 0.8 rad = 2048 + 0.8 / 2π × 4096 ≈ 2570 steps
  await waitState(p, () => Math.abs(window.xoqState.positions[1] - 2570) < 15);
  const angle = await p.evaluate(() => window.xoqState.angles[1]);
  assert.ok(Math.abs(angle - 0.8) < 0.03, `model angle ${angle}`);
  await shot(p, "urdf_viewer");
  await p.close();
});

test("can frame publisher: a sent frame gets the motor's reply", async () => {
  const p = await open("can_cmd_test.html", "can_cmd_test");
  await waitState(p, () => window.xoqState.kind === "ok");
  await p.fill("#frame-id", "002");
  await p.fill("#frame-data", "FFFFFFFFFFFFFFFD"); // disable motor 2: it answers on 0x012
  await p.click("#send");
  await waitState(p, () => window.xoqState.received.some((l) => l.startsWith("← 012#")));
  await shot(p, "can_cmd_test");
  await p.close();
});

test("track console lists the demo's broadcasts and dumps a track", async () => {
  const p = await open("subscribe.html", "subscribe");
  await waitState(p, () => window.xoqState.broadcasts.includes("xoq-openarm/state"));
  await p.fill("#bc", "xoq-so101/s2c");
  await p.click("#go");
  // Nothing asks the servos here; poke them through the relay from another page.
  const q = await open("urdf_viewer.html", "urdf-2");
  await waitState(p, () => window.xoqState.frames > 0);
  await shot(p, "subscribe");
  await q.close();
  await p.close();
});

test("openarm: the page survives a link blip, says so, and commands again", async () => {
  const p = await open("openarm.html", "openarm-blip");
  await waitState(p, () => window.xoqState.kind === "ok" && window.xoqState.link === "connected");
  assert.match(await p.textContent("#link"), /link: connected/);
  await p.click("#enable");
  // Drop the page's relay session (WebTransport) under it, as a network blip does.
  await p.evaluate(() => window.xoqRelay.connection.close());
  await waitState(p, () => window.xoqState.drops >= 1);
  await waitState(p, () => window.xoqState.link === "connected" && window.xoqState.reconnects >= 1);
  assert.match(await p.textContent("#link"), /reconnected 1×/);
  assert.equal(await p.evaluate(() => window.xoqState.kind), "ok");
  // Commands reach the motor again: the page re-enables and moves joint 3.
  await p.click("#enable");
  await p.$eval("#j3", (s) => {
    s.value = "-0.5";
    s.dispatchEvent(new Event("input"));
  });
  await waitState(p, () => Math.abs(window.xoqState.joints[2] + 0.5) < 0.05);
  await shot(p, "openarm_after_blip");
  await p.click("#disable");
  await p.close();
});

test("a page with ?jwt= dials the relay with the token, works behind it, and never shows it", async () => {
  // `xoq demo`'s relay checks no tokens (and refuses any it cannot verify), so this uses a
  // relay of its own with --auth-key, a server behind a token, and a token for the page.
  const { relayUrl, pageToken } = await tokenRelay();
  const p = await browser.newPage({ viewport: { width: 1200, height: 700 } });
  p.on("pageerror", (e) => console.log(`[jwt] page error: ${e.message}`));
  // Record every URL the page dials (WebTransport, or the WebSocket fallback).
  await p.addInitScript(() => {
    const dialed = [];
    Object.defineProperty(window, "__dialed", { value: dialed });
    for (const name of ["WebTransport", "WebSocket"]) {
      const Orig = window[name];
      if (!Orig) continue;
      window[name] = class extends Orig {
        constructor(...args) {
          dialed.push(String(args[0]));
          super(...args);
        }
      };
    }
  });
  const q = new URLSearchParams({ relay: relayUrl, openarm: "e2e-tok", jwt: pageToken });
  await p.goto(new URL(`openarm.html?${q}`, url).toString());
  await waitState(p, () => window.xoqState.kind === "ok" && window.xoqState.link === "connected", undefined, 30_000);
  const dialed = await p.evaluate(() => window.__dialed);
  assert.ok(
    dialed.some((u) => u.includes(`jwt=${pageToken}`) && u.includes(new URL(relayUrl).host)),
    `the relay is dialled with the token: ${dialed.map((u) => u.replace(pageToken, "<token>")).join(", ")}`,
  );
  // The token lets the page command the motor behind that relay.
  await p.click("#enable");
  await p.$eval("#j4", (s) => {
    s.value = "0.4";
    s.dispatchEvent(new Event("input"));
  });
  await waitState(p, () => Math.abs(window.xoqState.joints[3] - 0.4) < 0.05);
  const s = await p.evaluate(() => window.xoqState);
  assert.equal(s.hasToken, true);
  assert.equal(s.readOnly, false);
  const shown = [JSON.stringify(s), await p.evaluate(() => document.body.innerText), await p.title()].join("\n");
  assert.ok(!shown.includes(pageToken), "the page shows the token");
  assert.ok(shown.includes(`connected to ${relayUrl}`), `the relay is named without its token: ${s.status}`);
  await shot(p, "jwt");
  await p.click("#disable");
  await p.close();
});

test("a page explains a relay that is down", async () => {
  const p = await open("openarm.html?relay=http://127.0.0.1:9/anon", "relay-down");
  await waitState(p, () => window.xoqState.kind === "error", undefined, 30_000);
  const text = await p.textContent("#status");
  assert.match(text, /cannot reach the relay/);
  await shot(p, "relay_down");
  await p.close();
});

test("a page explains a path nobody publishes", async () => {
  const p = await open("openarm.html?openarm=nobody-here", "no-publisher");
  await waitState(p, () => window.xoqState.kind === "error", undefined, 30_000);
  assert.match(await p.textContent("#status"), /no publisher for "nobody-here"/);
  await shot(p, "no_publisher");
  await p.close();
});

// The picture on the player's canvas, scaled down: how much of it is not black, how many
// colours cover a visible share of it, and the pixels (to compare two samples).
function sampleCamera(p) {
  return p.evaluate(() => {
    const src = document.querySelector("moq-watch canvas");
    const w = 160;
    const h = 90;
    const c = document.createElement("canvas");
    c.width = w;
    c.height = h;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(src, 0, 0, w, h);
    const d = ctx.getImageData(0, 0, w, h).data;
    const counts = new Map();
    let lit = 0;
    const px = [];
    for (let i = 0; i < d.length; i += 4) {
      const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
      if (r + g + b > 60) lit++;
      const k = `${r >> 6}${g >> 6}${b >> 6}`; // 4 levels a channel: codec noise does not split a colour
      counts.set(k, (counts.get(k) ?? 0) + 1);
      px.push(r + g + b);
    }
    const colours = [...counts.values()].filter((n) => n >= (w * h) / 200).length;
    return { width: src.width, height: src.height, lit: lit / (w * h), colours, px };
  });
}

test("camera: the stock player decodes the demo camera's moving picture", async () => {
  const p = await open("camera.html", "camera");
  await waitState(p, () => window.xoqState.framesShown > 10, undefined, 30_000);
  const a = await sampleCamera(p);
  assert.ok(a.width > 0 && a.height > 0, `canvas ${a.width}x${a.height}`);
  assert.ok(a.lit > 0.3, `the picture is not blank (${(a.lit * 100).toFixed(0)}% lit)`);
  assert.ok(a.colours >= 5, `the picture has several colours (${a.colours})`);
  await p.waitForTimeout(1500);
  const b = await sampleCamera(p);
  const changed = a.px.filter((v, i) => Math.abs(v - b.px[i]) > 48).length / a.px.length;
  assert.ok(changed > 0.02, `the picture moves (${(changed * 100).toFixed(1)}% of it changed in 1.5 s)`);
  const s = await p.evaluate(() => window.xoqState);
  assert.notEqual(s.kind, "error", s.status);
  assert.ok(s.width > 0 && s.height > 0 && s.fps > 0, `resolution ${s.width}x${s.height}, ${s.fps} frames/s`);
  assert.match(await p.textContent("#stats"), new RegExp(`resolution\\s+${s.width}×${s.height}`));
  await shot(p, "camera");
  await p.close();
});

test("microphone: the stock player plays the demo tone, and the page hears 440 Hz", async () => {
  const p = await open("audio.html?autoplay=1", "audio");
  await waitState(p, () => window.xoqState.level > 0.05 && window.xoqState.peakHz > 0, undefined, 30_000);
  // The analyser's bins are rate/4096 wide (about 11.7 Hz at 48 kHz): 440 Hz within two bins.
  await p.waitForTimeout(500);
  const s = await p.evaluate(() => window.xoqState);
  assert.equal(s.codec, "opus");
  assert.equal(s.sampleRate, 48000);
  assert.ok(Math.abs(s.peakHz - 440) <= 24, `the loudest frequency is ${s.peakHz} Hz, not the 440 Hz tone`);
  assert.ok(s.level > 0.1 && s.level < 0.6, `level ${s.level} (the tone's RMS is 0.35)`);
  assert.ok(s.bytesReceived > 1000, `${s.bytesReceived} bytes received`);
  await shot(p, "audio");
  await p.close();
});

test("microphone: push-to-talk reaches the robot's speaker through the relay", async () => {
  const p = await open("audio.html", "audio-talk");
  await waitState(p, () => window.xoqState.speaker?.relayWrites === true, undefined, 30_000);
  const before = await p.evaluate(() => window.xoqState.speaker.played);
  await p.evaluate(() => window.xoqTalk.start());
  await waitState(p, () => window.xoqState.talkPackets > 40 && window.xoqState.speaker?.talking === true, undefined, 30_000);
  await waitState(p, (b) => window.xoqState.speaker.played > b + 24000, before, 10_000);
  // Chromium's fake microphone beeps: the speaker's level shows it (not just silence played).
  await waitState(p, () => window.xoqState.speaker.level > 0.005, undefined, 10_000);
  const s = await p.evaluate(() => window.xoqState);
  assert.equal(s.talkError, null);
  await shot(p, "audio_talk");
  await p.evaluate(() => window.xoqTalk.stop());
  // The talker's broadcast goes away: the speaker is free for the next one.
  await waitState(p, () => window.xoqState.speaker?.talking === false, undefined, 15_000);
  await p.close();
});

test("camera: a broadcast nobody publishes gets a clear message", async () => {
  const p = await open("camera.html?camera=nothing-here", "camera-no-publisher");
  await waitState(p, () => window.xoqState.kind === "error", undefined, 30_000);
  assert.match(await p.textContent("#status"), /no publisher for "nothing-here"/);
  await shot(p, "camera_no_publisher");
  await p.close();
});

test("camera: a relay that is down gets a clear message", async () => {
  const p = await open("camera.html?relay=http://127.0.0.1:9/anon&camera=xoq-camera", "camera-relay-down");
  await waitState(p, () => window.xoqState.kind === "error", undefined, 30_000);
  assert.match(await p.textContent("#status"), /cannot reach the relay/);
  await p.close();
});

// The synthetic depth camera's stamp (crates/xoq-device/src/depth/scene.rs): its first 12
// pixels are three u64 words, 16 bits a pixel, high first: frame number, capture time, check.
function depthStamp(px) {
  const word = (i) => px.slice(i * 4, i * 4 + 4).reduce((acc, v) => (acc << 16n) | BigInt(v), 0n);
  const M = (1n << 64n) - 1n;
  const rotl = (x, n) => ((x << BigInt(n)) | (x >> BigInt(64 - n))) & M;
  const [seq, ts, chk] = [word(0), word(1), word(2)];
  const ok = chk === (rotl(seq, 23) ^ rotl(ts, 7) ^ 0x786f715f64707431n);
  return { seq, ts, ok };
}

test("depth viewer: frames arrive, the board reads 1 m, also under the cursor", async () => {
  const p = await open("realsense_viewer.html", "realsense_viewer");
  await waitState(p, () => window.xoqDepth?.frames > 3 && window.xoqState.kind === "ok", undefined, 30_000);
  const first = await p.evaluate(() => ({ frames: window.xoqDepth.frames, seq: window.xoqDepth.lastSeq }));
  await waitState(p, (a) => window.xoqDepth.frames >= a.frames + 5 && window.xoqDepth.lastSeq > a.seq, first);
  // One frame, read at once (the page swaps frames between evaluations).
  const d = await p.evaluate(() => {
    const x = window.xoqDepth;
    const k = x.intrinsics;
    const around = [];
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) around.push(x.valueAt(Math.floor(k.ppx) + dx, Math.floor(k.ppy) + dy));
    const left = [];
    for (let y = 20; y < 480; y += 20) left.push(x.valueAt(3, y));
    return {
      width: x.width, height: x.height, scale: x.scale, k, around, left,
      outside: x.valueAt(640, 0), stamp: x.pixels(0, 12), seq: x.lastSeq, ts: x.timestampUs,
      latencyMs: x.latencyMs, compression: x.compression, codec: x.codec, decodeErrors: x.decodeErrors,
    };
  });
  assert.equal(d.width, 640);
  assert.equal(d.height, 480);
  assert.equal(d.scale, 0.001);
  assert.equal(d.k.width, 640);
  assert.equal(d.k.height, 480);
  // The board at 1.000 m (±2 mm noise) covers the principal point; a pixel may drop out (0).
  const measured = d.around.filter((v) => v !== 0);
  assert.ok(measured.length >= 5, `the centre is measured: ${d.around}`);
  for (const v of measured) assert.ok(Math.abs(v - 1000) <= 10, `centre reads ${v} mm, not 1000 ± 10: ${d.around}`);
  assert.ok(d.left.every((v) => v === 0), `the band on the left has no measurement: ${d.left}`);
  assert.equal(d.outside, null);
  assert.equal(d.decodeErrors, 0);
  // The decoded picture carries the capture's own numbers: decoding got them right.
  const stamp = depthStamp(d.stamp);
  assert.ok(stamp.ok, `the frame's stamp checks out: ${d.stamp}`);
  assert.equal(Number(stamp.ts), d.ts, "the stamp's capture time is the track frame's");
  assert.equal(Number(stamp.seq), d.seq, "the stamp's frame number is the track frame's");
  assert.ok(d.compression > 1.5, `compression ${d.compression}:1 (${d.codec})`);
  assert.ok(Number.isFinite(d.latencyMs) && d.latencyMs > -5 && d.latencyMs < 3000, `latency ${d.latencyMs} ms`);
  const info = await p.textContent("#frame-info");
  assert.match(info, /frame \d+ · capture → display [\d.]+ ms · compression [\d.]+:1/);
  // The cursor over the middle of the depth picture: about 1000 mm (a dropout there shows as
  // "no measurement" for one frame; the readout follows the frames).
  const box = await p.locator("#depth").boundingBox();
  await p.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await waitState(p, () => {
    const m = /: (\d+) mm = ([\d.]+) m/.exec(document.getElementById("depth-at").textContent);
    return m !== null && Math.abs(Number(m[1]) - 1000) <= 10 && Math.abs(Number(m[2]) - 1) <= 0.01;
  });
  const text = await p.textContent("#depth-at");
  assert.match(text, /pixel \((31\d|32\d), (23\d|24\d)\): \d+ mm = [\d.]+ m/);
  // The colour picture plays next to it.
  await waitState(p, () => window.xoqState.colorFrames > 3, undefined, 30_000);
  // "Match the colour": the depth shown is then of the capture the colour picture shows.
  await p.check("#sync");
  const unsynced = await p.evaluate(() => window.xoqDepth.frames);
  await waitState(p, (n) => window.xoqDepth.syncMs === 0 && window.xoqDepth.frames > n + 3, unsynced);
  assert.match(await p.textContent("#frame-info"), /the colour frame's capture/);
  assert.equal(await p.evaluate(() => window.xoqState.kind), "ok");
  await shot(p, "realsense_viewer");
  await p.close();
});

// The WebGL canvas scaled down: the share of it that is not the background, and its colours.
function sampleCloud(p) {
  return p.evaluate(() => {
    const src = document.querySelector("#view canvas");
    const w = 160;
    const h = 90;
    const c = document.createElement("canvas");
    c.width = w;
    c.height = h;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(src, 0, 0, w, h);
    const d = ctx.getImageData(0, 0, w, h).data;
    let lit = 0;
    const px = [];
    for (let i = 0; i < d.length; i += 4) {
      // The background is 0x0d0e12.
      if (Math.abs(d[i] - 13) + Math.abs(d[i + 1] - 14) + Math.abs(d[i + 2] - 18) > 24) lit++;
      px.push([d[i], d[i + 1], d[i + 2]]);
    }
    return { lit: lit / (w * h), px };
  });
}

test("depth point cloud: the cloud renders, coloured by picture and by distance, without WebGL errors", async () => {
  const p = await open("realsense_pointcloud.html", "realsense_pointcloud");
  // 640 × 480 pixels less the invalid band (1/32 of the width) and dropouts (1 in 200).
  await waitState(p, () => window.xoqCloud?.frames > 2 && window.xoqCloud.points > 100_000 && window.xoqState.kind === "ok", undefined, 40_000);
  const c = await p.evaluate(() => ({ ...window.xoqState, width: window.xoqCloud.width, height: window.xoqCloud.height, points: window.xoqCloud.points }));
  assert.equal(c.width, 640);
  assert.equal(c.height, 480);
  assert.ok(c.points > 280_000 && c.points < 300_000, `${c.points} points`);
  // Coloured by the colour picture once the player shows it.
  await waitState(p, () => window.xoqCloud.colorBy === "picture" && window.xoqCloud.pairedFrames > 2, undefined, 30_000);
  // Each colour frame is drawn with the depth of its own capture.
  assert.equal(await p.evaluate(() => window.xoqCloud.syncMs), 0, "colour and depth of the same capture");
  const frames = await p.evaluate(() => window.xoqCloud.frames);
  await waitState(p, (f) => window.xoqCloud.frames > f, frames);
  const picture = await sampleCloud(p);
  assert.ok(picture.lit > 0.2, `the cloud covers the view (${(picture.lit * 100).toFixed(0)}% drawn)`);
  await shot(p, "realsense_pointcloud");
  // By distance: the same points, other colours.
  await p.selectOption("#color-by", "depth");
  const f2 = await p.evaluate(() => window.xoqCloud.frames);
  await waitState(p, (f) => window.xoqCloud.colorBy === "depth" && window.xoqCloud.frames > f + 1, f2);
  const depth = await sampleCloud(p);
  assert.ok(depth.lit > 0.2, `the cloud covers the view (${(depth.lit * 100).toFixed(0)}% drawn)`);
  const recoloured = picture.px.filter((a, i) => {
    const b = depth.px[i];
    return Math.abs(a[0] - b[0]) + Math.abs(a[1] - b[1]) + Math.abs(a[2] - b[2]) > 60;
  }).length / picture.px.length;
  assert.ok(recoloured > 0.1, `colouring by distance changes the picture (${(recoloured * 100).toFixed(0)}% of it)`);
  await shot(p, "realsense_pointcloud_depth");
  assert.equal(await p.evaluate(() => window.xoqCloud.glErrors), 0, "gl.getError() after drawing");
  const gl = p.consoleLog.filter((m) => (m.type === "error" || m.type === "warning") && /WebGL|GL_|THREE\.|shader/i.test(m.text));
  assert.deepEqual(gl, [], "no WebGL errors in the console");
  await p.close();
});

test("depth pages: a broadcast nobody publishes, one without depth, and a relay that is down get clear messages", async () => {
  const p = await open("realsense_viewer.html?depth=nothing-here", "realsense-no-publisher");
  await waitState(p, () => window.xoqState.kind === "error", undefined, 30_000);
  assert.match(await p.textContent("#status"), /no publisher for "nothing-here"/);
  await shot(p, "realsense_no_publisher");
  await p.close();
  // The colour camera's broadcast: published, but its catalog describes no depth camera.
  const q = await open("realsense_pointcloud.html?depth=xoq-camera", "realsense-no-depth");
  await waitState(q, () => window.xoqState.kind === "error", undefined, 30_000);
  assert.match(await q.textContent("#status"), /"xoq-camera" is published but shows no depth: its catalog describes no depth camera/);
  await q.close();
  const r = await open("realsense_pointcloud.html?relay=http://127.0.0.1:9/anon", "realsense-relay-down");
  await waitState(r, () => window.xoqState.kind === "error", undefined, 30_000);
  assert.match(await r.textContent("#status"), /cannot reach the relay/);
  await r.close();
});

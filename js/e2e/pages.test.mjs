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
  for (const page of ["openarm.html", "urdf_viewer.html", "can_cmd_test.html", "subscribe.html", "camera.html", "audio.html"]) {
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

// Shared by the example pages: configuration, the status line, connecting with a clear
// message when the relay is down, and waiting for a publisher.
import * as Moq from "@moq/net";
import { connect } from "../src/index";

/** Where the pages find the relay and the demo's broadcasts. */
export interface PageConfig {
  relay: string;
  so101: string;
  openarm: string;
  /** The demo camera's broadcast (hang format); absent in demos without a camera. */
  camera?: string;
}

/** What a page exposes to tests and to the curious (window.xoqState). */
export interface PageState {
  status: string;
  kind: "info" | "ok" | "error";
  connected: boolean;
  [key: string]: unknown;
}

declare global {
  interface Window {
    xoqState: PageState;
  }
}

window.xoqState = { status: "starting", kind: "info", connected: false };

/** `/config.json` (served by `xoq demo`), overridden by URL parameters of the same names. */
export async function loadConfig(): Promise<PageConfig> {
  let cfg: PageConfig = { relay: "http://127.0.0.1:4443/anon", so101: "xoq-so101", openarm: "xoq-openarm" };
  try {
    const r = await fetch("config.json", { cache: "no-store" });
    if (r.ok) cfg = { ...cfg, ...(await r.json()) };
  } catch {
    // Opened from elsewhere than `xoq demo`: the defaults and URL parameters decide.
  }
  const q = new URLSearchParams(location.search);
  for (const k of ["relay", "so101", "openarm", "camera"] as const) {
    const v = q.get(k);
    if (v) cfg[k] = v;
  }
  return cfg;
}

/** Show a status line (and mirror it into window.xoqState). */
export function setStatus(text: string, kind: PageState["kind"] = "info"): void {
  const el = document.getElementById("status");
  if (el) {
    el.textContent = text;
    el.className = `status ${kind}`;
  }
  window.xoqState.status = text;
  window.xoqState.kind = kind;
}

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms / 1000} s`)), ms)),
  ]);
}

/** Connect to the relay, or explain on the page why not and throw. */
export async function connectOrExplain(relay: string): Promise<Moq.Connection.Established> {
  setStatus(`connecting to ${relay} …`);
  try {
    const conn = await timeout(connect(relay), 8000, "relay");
    window.xoqState.connected = true;
    // Leave cleanly so the relay retracts this page's broadcasts at once (a command path
    // another client publishes next is then routed to it without waiting for a timeout).
    window.addEventListener("pagehide", () => conn.close());
    conn.closed.then(() => {
      window.xoqState.connected = false;
      setStatus(`the relay closed the connection (${relay}); reload to reconnect`, "error");
    });
    return conn;
  } catch (e) {
    setStatus(
      `cannot reach the relay at ${relay}: ${(e as Error).message ?? e}. Is \`xoq demo\` (or \`xoq relay\`) running?`,
      "error",
    );
    throw e;
  }
}

/** Wait until `broadcast` is announced on the relay; false after `ms` (nobody publishes it). */
export async function waitForPublisher(
  conn: Moq.Connection.Established,
  broadcast: string,
  ms = 4000,
): Promise<boolean> {
  const ann = conn.announced(Moq.Path.from(""));
  const found = (async () => {
    for (;;) {
      const ev = await ann.next();
      if (!ev) return false;
      if (ev.active && String(ev.path) === broadcast) return true;
    }
  })();
  try {
    return await Promise.race([found, new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  } finally {
    ann.close();
  }
}

/** Explain a missing publisher on the page. */
export function noPublisher(broadcast: string, relay: string, hint: string): void {
  setStatus(`no publisher for "${broadcast}" on ${relay}: ${hint}`, "error");
}

/** Median of the last values pushed (for latency displays). */
export class Rolling {
  private v: number[] = [];
  constructor(private readonly n = 50) {}
  push(x: number): void {
    this.v.push(x);
    if (this.v.length > this.n) this.v.shift();
  }
  median(): number | undefined {
    if (!this.v.length) return undefined;
    const s = [...this.v].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  }
}

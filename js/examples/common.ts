// Shared by the example pages: configuration (and the relay token), the status line and the
// link badge, a relay session that reconnects with a clear message when the relay is down,
// and waiting for a publisher.
import {
  LinkDownError,
  type LinkState,
  Relay,
  type RelayState,
  type RelaySession,
  jwtOf,
  redactUrl,
  withJwt,
} from "../src/index";

/** Where the pages find the relay and the demo's broadcasts. */
export interface PageConfig {
  /** The relay URL as shown (never with the token). */
  relay: string;
  so101: string;
  openarm: string;
  /** The demo camera's broadcast (hang format); absent in demos without a camera. */
  camera?: string;
  /** The demo microphone's broadcast (hang format, Opus); absent in older demos. */
  audio?: string;
  /** The demo depth camera's broadcast (hang format with a `depth` track); absent in older demos. */
  depth?: string;
  /** The relay token (`?jwt=` of the page URL, or of a `?relay=` URL); never shown. */
  jwt?: string;
}

/** What a page exposes to tests and to the curious (window.xoqState). Never the token. */
export interface PageState {
  status: string;
  kind: "info" | "ok" | "error";
  connected: boolean;
  /** The relay session's state, and the link's (the session protocol with the server). */
  relayState?: RelayState;
  link?: LinkState;
  linkReason?: string | null;
  readOnly?: boolean;
  drops?: number;
  reconnects?: number;
  /** Whether a relay token is presented. */
  hasToken?: boolean;
  [key: string]: unknown;
}

declare global {
  interface Window {
    xoqState: PageState;
    /** The page's relay session, for tests and the curious. */
    xoqRelay?: Relay;
  }
}

window.xoqState = { status: "starting", kind: "info", connected: false };

/**
 * `/config.json` (served by `xoq demo`), overridden by URL parameters of the same names. A
 * relay token comes from the page's own `?jwt=` (or a `jwt` in a `?relay=` URL) and is kept
 * apart from the relay URL shown on the page; {@link dialUrl} puts it back for dialling.
 */
export async function loadConfig(): Promise<PageConfig> {
  let cfg: PageConfig = { relay: "http://127.0.0.1:4443/anon", so101: "xoq-so101", openarm: "xoq-openarm" };
  try {
    const r = await fetch("config.json", { cache: "no-store" });
    if (r.ok) cfg = { ...cfg, ...(await r.json()) };
  } catch {
    // Opened from elsewhere than `xoq demo`: the defaults and URL parameters decide.
  }
  const q = new URLSearchParams(location.search);
  for (const k of ["relay", "so101", "openarm", "camera", "audio", "depth"] as const) {
    const v = q.get(k);
    if (v) cfg[k] = v;
  }
  const jwt = q.get("jwt") || jwtOf(cfg.relay);
  if (jwt) cfg.jwt = jwt;
  cfg.relay = redactUrl(cfg.relay);
  window.xoqState.hasToken = jwt !== null && jwt !== undefined && jwt !== "";
  return cfg;
}

/** The URL to dial: the relay with its token (keep it out of the page). */
export function dialUrl(cfg: PageConfig): string {
  return withJwt(cfg.relay, cfg.jwt);
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

// The link badge next to the status line, created on first use.
function badge(text: string, kind: PageState["kind"]): void {
  let el = document.getElementById("link");
  if (!el) {
    el = document.createElement("span");
    el.id = "link";
    document.getElementById("status")?.after(el);
  }
  el.textContent = text;
  el.className = `status link ${kind}`;
}

/**
 * Start the relay session (it reconnects on its own) and wait for it; while it cannot reach
 * the relay the page says so (and keeps trying, up to the reconnect deadline). Throws once
 * it gives up.
 */
export async function connectOrExplain(cfg: PageConfig): Promise<Relay> {
  setStatus(`connecting to ${cfg.relay} …`);
  const relay = Relay.start(dialUrl(cfg));
  window.xoqRelay = relay;
  // Leave cleanly so the relay retracts this page's broadcasts at once (a command path
  // another client publishes next is then routed to it without waiting for a timeout).
  window.addEventListener("pagehide", () => relay.close());
  const show = (): void => {
    window.xoqState.relayState = relay.state;
    window.xoqState.connected = relay.state === "connected";
    if (relay.state === "connected") return;
    badge(`relay: ${relay.state}`, relay.state === "connecting" ? "info" : "error");
    if (relay.state === "closed" || relay.reason?.startsWith("cannot reach")) {
      // The reason names the relay without its token.
      setStatus(
        `${relay.reason}. Is \`xoq demo\` (or \`xoq relay\`) running?${relay.state === "closed" ? " Reload to try again." : " (retrying)"}`,
        "error",
      );
    }
  };
  relay.addEventListener("state", show);
  if (!(await relay.waitConnected())) {
    show();
    throw new Error(relay.reason ?? "the relay session closed");
  }
  relay.removeEventListener("state", show);
  show();
  badge("relay: connected", "ok");
  return relay;
}

/** For pages without a client link: mirror the relay session into the badge and status line. */
export function followRelay(relay: Relay, okText: string): void {
  const show = (): void => {
    window.xoqState.relayState = relay.state;
    window.xoqState.connected = relay.state === "connected";
    const counts = relay.counters.reconnects ? ` (reconnected ${relay.counters.reconnects}×)` : "";
    if (relay.state === "connected") {
      badge(`relay: connected${counts}`, "ok");
      setStatus(okText, "ok");
    } else {
      badge(`relay: ${relay.state}`, "error");
      setStatus(`${relay.state === "closed" ? "the relay session is closed" : "relay session down"}: ${relay.reason}${relay.state === "closed" ? "; reload to reconnect" : "; reconnecting …"}`, "error");
    }
  };
  relay.addEventListener("state", show);
  show();
}

/**
 * Mirror a client's link into the page: the badge, window.xoqState, and the status line
 * (`okText` while connected; why not, otherwise).
 */
export function followLink(link: RelaySession, relay: Relay, okText: string): void {
  const show = (): void => {
    Object.assign(window.xoqState, {
      link: link.state,
      linkReason: link.reason ?? null,
      readOnly: link.readOnly,
      drops: link.counters.drops,
      reconnects: link.counters.reconnects,
      relayState: relay.state,
      connected: relay.state === "connected",
    });
    const counts = link.counters.reconnects ? ` (reconnected ${link.counters.reconnects}×)` : "";
    switch (link.state) {
      case "connected":
        if (link.readOnly) {
          badge(`link: read-only${counts}`, "info");
          setStatus(`${okText} — read-only: the relay token does not allow sending here`, "info");
        } else {
          badge(`link: connected${counts}`, "ok");
          setStatus(okText, "ok");
        }
        break;
      case "closed":
        badge("link: closed", "error");
        setStatus(`the link is closed (${link.reason}); reload to reconnect`, "error");
        break;
      default:
        badge(`link: ${link.state}`, "error");
        setStatus(`link down: ${link.reason}; reconnecting …`, "error");
    }
  };
  link.addEventListener("state", show);
  relay.addEventListener("state", show);
  show();
}

/** Report an error of a send on the page; a link that is down is already shown. */
export function reportSendError(e: unknown): void {
  if (e instanceof LinkDownError) return;
  setStatus(String((e as Error).message ?? e), "error");
}

/** Wait until `broadcast` is announced on the relay; false after `ms` (nobody publishes it). */
export async function waitForPublisher(relay: Relay, broadcast: string, ms = 4000): Promise<boolean> {
  const handle = relay.announcedBroadcast(broadcast);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let dispose: (() => void) | undefined;
  try {
    return await new Promise<boolean>((resolve) => {
      if (handle.active.peek() !== undefined) return resolve(true);
      timer = setTimeout(() => resolve(false), ms);
      dispose = handle.active.subscribe((bc) => {
        if (bc !== undefined) resolve(true);
      });
    });
  } finally {
    clearTimeout(timer);
    dispose?.();
    handle.close();
  }
}

/** Explain a missing publisher on the page (or the relay session, if that is what is missing). */
export function noPublisher(broadcast: string, relay: string, hint: string): void {
  const r = window.xoqRelay;
  if (r && r.state !== "connected") {
    // The relay let the page in and then dropped it (it refused the token, say): say that.
    const show = (): void => {
      if (r.state !== "connected") setStatus(`${r.reason ?? "the relay session is down"}; retrying …`, "error");
    };
    r.addEventListener("state", show);
    show();
    return;
  }
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
  clear(): void {
    this.v = [];
  }
  median(): number | undefined {
    if (!this.v.length) return undefined;
    const s = [...this.v].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  }
}

// Publish raw CAN frames to `{path}/cmd` and show what `{path}/state` carries.
import { canFrame, openCan, type CanFrame } from "../src/index";
import { connectOrExplain, dialUrl, followLink, loadConfig, noPublisher, reportSendError, setStatus, waitForPublisher } from "./common";

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const log = document.getElementById("log") as HTMLElement;
const lines: string[] = [];
const state = window.xoqState;
Object.assign(state, { sent: 0, received: [] as string[] });

function show(line: string): void {
  lines.push(line);
  if (lines.length > 200) lines.shift();
  log.textContent = lines.join("\n");
  log.scrollTop = log.scrollHeight;
}

/** `123#DEADBEEF` or `123##1DEADBEEF` (FD, cansend syntax), or the form fields. */
function parse(id: string, data: string, fd: boolean, brs: boolean): CanFrame {
  const n = Number.parseInt(id, 16);
  if (!Number.isFinite(n) || n < 0 || n > 0x1fffffff) throw new Error(`bad id ${id}`);
  const clean = data.replace(/[\s.:]/g, "");
  if (clean.length % 2 || /[^0-9a-f]/i.test(clean)) throw new Error(`bad data ${data}`);
  const bytes = new Uint8Array(clean.length / 2).map((_, i) => Number.parseInt(clean.slice(2 * i, 2 * i + 2), 16));
  return canFrame(n, bytes, { fd, brs: fd && brs, extended: n > 0x7ff || id.length > 3 });
}

async function main(): Promise<void> {
  const cfg = await loadConfig();
  const path = new URLSearchParams(location.search).get("path") ?? cfg.openarm;
  (document.getElementById("path") as HTMLElement).textContent = path;
  const relay = await connectOrExplain(cfg);
  if (!(await waitForPublisher(relay, `${path}/state`))) {
    noPublisher(path, cfg.relay, "start a CAN server with --relay, --moq and --moq-writes on");
    return;
  }
  const bus = await openCan(dialUrl(cfg), path, { relay });
  followLink(bus.link, relay, `connected: sending to ${path}/cmd, showing ${path}/state`);
  document.getElementById("send")?.addEventListener("click", () => {
    try {
      const f = parse(
        (document.getElementById("frame-id") as HTMLInputElement).value,
        (document.getElementById("frame-data") as HTMLInputElement).value,
        (document.getElementById("fd") as HTMLInputElement).checked,
        (document.getElementById("brs") as HTMLInputElement).checked,
      );
      bus.send(f);
      state.sent = (state.sent as number) + 1;
      show(`→ ${f.id.toString(16).padStart(3, "0")}${f.fd ? "##" : "#"}${hex(f.data)}`);
    } catch (e) {
      // A link that is down says so in the status line already; anything else is shown.
      reportSendError(e);
      show(`✗ ${String((e as Error).message ?? e)}`);
    }
  });
  for await (const f of bus as AsyncIterable<CanFrame>) {
    const line = `← ${f.id.toString(16).padStart(3, "0")}${f.fd ? "##" : "#"}${hex(f.data)}  t=${f.timestampUs}`;
    (state.received as string[]).push(line);
    show(line);
  }
}

main().catch((e) => {
  if (window.xoqState.kind !== "error") setStatus(`error: ${(e as Error).message ?? e}`, "error");
});

// Raw track console: list the broadcasts on the relay and dump any track's frames as hex.
import * as Moq from "@moq/net";
import { connectOrExplain, followRelay, loadConfig, setStatus } from "./common";

const log = document.getElementById("log") as HTMLElement;
const list = document.getElementById("broadcasts") as HTMLElement;
const lines: string[] = [];
const state = window.xoqState;
Object.assign(state, { broadcasts: [] as string[], frames: 0 });

function show(line: string): void {
  lines.push(line);
  if (lines.length > 300) lines.shift();
  log.textContent = lines.join("\n");
  log.scrollTop = log.scrollHeight;
}

async function main(): Promise<void> {
  const cfg = await loadConfig();
  const relay = await connectOrExplain(cfg);
  followRelay(relay, `connected to ${cfg.relay}`);
  // The list of broadcasts, made again on every session (the relay session reconnects).
  const names = state.broadcasts as string[];
  relay.established.watch((conn) => {
    names.length = 0;
    list.textContent = "";
    if (!conn) return;
    void (async () => {
      const ann = conn.announced(Moq.Path.from(""));
      try {
        for (;;) {
          const ev = await ann.next();
          if (!ev) break;
          const p = String(ev.path);
          if (ev.active && !names.includes(p)) names.push(p);
          if (!ev.active && names.includes(p)) names.splice(names.indexOf(p), 1);
          list.textContent = names.join("\n");
        }
      } catch {
        // The session ended; the next one lists again.
      }
    })();
  });
  let current: Moq.Track.Subscriber | undefined;
  document.getElementById("go")?.addEventListener("click", async () => {
    current?.close();
    const name = (document.getElementById("bc") as HTMLInputElement).value.trim();
    const trackName = (document.getElementById("track") as HTMLInputElement).value.trim() || "data";
    const conn = relay.connection;
    if (!conn) {
      show(`-- not connected to the relay (${relay.reason})`);
      return;
    }
    const sub = conn.consume(Moq.Path.from(name)).subscribe(trackName);
    current = sub;
    show(`-- ${name} / ${trackName}`);
    try {
      for (;;) {
        const g = await sub.recvGroup();
        if (!g) break;
        for (;;) {
          const f = await g.readFrame();
          if (!f) break;
          const bytes: Uint8Array = (f as { payload?: Uint8Array }).payload ?? (f as unknown as Uint8Array);
          state.frames = (state.frames as number) + 1;
          const hex = Array.from(bytes.subarray(0, 48), (x) => x.toString(16).padStart(2, "0")).join(" ");
          show(`g${g.sequence} ${bytes.length} B  ${hex}${bytes.length > 48 ? " …" : ""}`);
        }
      }
      show("-- track ended");
    } catch (e) {
      show(`-- ${(e as Error).message ?? e}`);
    }
  });
}

main().catch((e) => {
  if (window.xoqState.kind !== "error") setStatus(`error: ${(e as Error).message ?? e}`, "error");
});

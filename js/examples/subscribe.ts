// Raw track console: list the broadcasts on the relay and dump any track's frames as hex.
import * as Moq from "@moq/net";
import { connectOrExplain, loadConfig, setStatus } from "./common";

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
  const conn = await connectOrExplain(cfg.relay);
  setStatus(`connected to ${cfg.relay}`, "ok");
  (async () => {
    const ann = conn.announced(Moq.Path.from(""));
    for (;;) {
      const ev = await ann.next();
      if (!ev) break;
      const names = state.broadcasts as string[];
      const p = String(ev.path);
      if (ev.active && !names.includes(p)) names.push(p);
      if (!ev.active) names.splice(names.indexOf(p), 1);
      list.textContent = names.join("\n");
    }
  })();
  let current: Moq.Track.Subscriber | undefined;
  document.getElementById("go")?.addEventListener("click", async () => {
    current?.close();
    const name = (document.getElementById("bc") as HTMLInputElement).value.trim();
    const trackName = (document.getElementById("track") as HTMLInputElement).value.trim() || "data";
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

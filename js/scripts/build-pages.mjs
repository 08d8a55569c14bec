// Bundle the example pages into crates/xoq/web/, which the xoq binary embeds and `xoq demo`
// serves. The output is committed so `cargo run -- demo` needs no Node.js; the test script
// rebuilds it and fails if the committed copy is stale.
import { build } from "esbuild";
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const examples = join(here, "..", "examples");
const out = join(here, "..", "..", "crates", "xoq", "web");

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
// A page is a .ts with an .html of the same name; other .ts files are shared modules.
const pages = readdirSync(examples).filter((f) => f.endsWith(".ts") && existsSync(join(examples, f.replace(/\.ts$/, ".html"))));
await build({
  entryPoints: pages.map((p) => join(examples, p)),
  outdir: out,
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  splitting: true, // three.js and @moq/net once, shared by the pages
  chunkNames: "chunks/[name]-[hash]",
  legalComments: "none",
  logLevel: "warning",
});
for (const f of readdirSync(examples)) {
  if (/\.(html|css|urdf)$/.test(f)) copyFileSync(join(examples, f), join(out, f));
}
console.log(`pages: ${pages.join(", ")} -> ${out}`);

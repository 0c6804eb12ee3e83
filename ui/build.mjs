// Build the screening room into ONE self-contained HTML file shipped in the Python package,
// and the test host page the browser tests drive it from.
//
//   npm ci && npm run build
//
// Each output starts with the SHA-256 of the sources it was built from (sourceHash below);
// tests/test_view.py recomputes it and fails when an output is older than its sources.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..");
const SOURCES = ["build.mjs", "package.json", "package-lock.json", "src", "host"];

function files(path) {
  const full = join(here, path);
  try {
    return readdirSync(full, { withFileTypes: true }).flatMap((entry) => files(join(path, entry.name)));
  } catch {
    return [path];
  }
}

/** sha256 over "<path>\0<sha256 of content>\n" for every source file, paths sorted. */
export function sourceHash() {
  const hash = createHash("sha256");
  for (const path of SOURCES.flatMap(files).sort()) {
    const digest = createHash("sha256").update(readFileSync(join(here, path))).digest("hex");
    hash.update(`${path.split("\\").join("/")}\0${digest}\n`);
  }
  return hash.digest("hex");
}

async function bundle(entry) {
  const result = await build({
    entryPoints: [join(here, entry)],
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    minify: true,
    legalComments: "none",
    write: false,
  });
  const code = result.outputFiles[0].text;
  if (/<\/script/i.test(code)) throw new Error(`${entry}: the bundle contains </script and cannot be inlined`);
  return code;
}

async function page(template, css, entry, output) {
  const stamp = `<!-- Built from ui/ by "npm run build"; do not edit. source-sha256: ${sourceHash()} -->`;
  const code = await bundle(entry);
  const html = readFileSync(join(here, template), "utf8")
    .replace("<!doctype html>", () => `<!doctype html>\n${stamp}`)
    .replace("/*CSS*/", () => (css ? readFileSync(join(here, css), "utf8") : ""))
    .replace("/*JS*/", () => code);
  writeFileSync(join(repo, output), html);
  console.log(`${relative(repo, join(repo, output))}: ${html.length} bytes`);
}

await page("src/view.html", "src/view.css", "src/view.ts", "server/kling_video_mcp/surface/view/screening-room.html");
await page("host/host.html", null, "host/host.ts", "tests/view_host/host.html");

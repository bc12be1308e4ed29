// Parses Mermaid text (standard input, or the files named as arguments) with the real Mermaid
// parser (npm `mermaid`, in a jsdom window). Exits 0 when every diagram parses, 1 with the
// parser's message otherwise. Used by tests/tests/trace.rs via scripts/test.sh.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!DOCTYPE html><body></body>", { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
for (const name of ["Element", "HTMLElement", "SVGElement", "DOMParser", "Node", "navigator"]) {
  if (!(name in globalThis)) {
    Object.defineProperty(globalThis, name, { value: dom.window[name], configurable: true });
  }
}

const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

const inputs = process.argv.length > 2
  ? process.argv.slice(2).map((f) => [f, readFileSync(f, "utf8")])
  : [["<stdin>", readFileSync(0, "utf8")]];
let failed = false;
for (const [name, text] of inputs) {
  try {
    const result = await mermaid.parse(text);
    console.log(`${name}: ok (${result.diagramType})`);
  } catch (e) {
    failed = true;
    console.error(`${name}: not valid Mermaid: ${e?.message ?? e}`);
  }
}
process.exit(failed ? 1 : 0);

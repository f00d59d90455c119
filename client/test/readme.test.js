// The React app README.md shows is example/, file for file: the end-to-end test builds example/,
// so what the README tells a newcomer to write is what `make test` runs in a browser.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const CLIENT_DIR = fileURLToPath(new URL("..", import.meta.url));
const EXAMPLE_DIR = join(CLIENT_DIR, "example");
const readme = readFileSync(join(CLIENT_DIR, "README.md"), "utf8");

/** `**\`path\`**` followed by a fenced block: the README's files, by path. */
function readmeFiles() {
  const files = new Map();
  for (const match of readme.matchAll(/^\*\*`([^`]+)`\*\*\n\n```[a-z]*\n([\s\S]*?)^```$/gm)) {
    files.set(match[1], match[2]);
  }
  return files;
}

/** Every file of example/ but its lockfile, by path. */
function exampleFiles(dir = EXAMPLE_DIR, files = new Map()) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) exampleFiles(path, files);
    else if (entry.name !== "package-lock.json") files.set(relative(EXAMPLE_DIR, path), readFileSync(path, "utf8"));
  }
  return files;
}

describe("README.md", () => {
  test("shows example/ exactly, every file of it", () => {
    const shown = readmeFiles();
    const example = exampleFiles();
    assert.deepEqual([...shown.keys()].sort(), [...example.keys()].sort());
    for (const [path, content] of example) assert.equal(shown.get(path), content, `README.md's ${path}`);
  });

  test("its TypeScript example is test/types/readme.tsx, which tsc compiles (npm run typecheck)", () => {
    const shown = readme.match(/^## TypeScript\n[\s\S]*?^```tsx\n([\s\S]*?)^```$/m);
    assert.ok(shown, "README.md has a TypeScript section with a tsx example");
    assert.equal(shown[1], readFileSync(join(CLIENT_DIR, "test", "types", "readme.tsx"), "utf8"));
    const tsconfig = JSON.parse(readFileSync(join(CLIENT_DIR, "test", "types", "tsconfig.json"), "utf8"));
    assert.ok(tsconfig.files.includes("readme.tsx"));
  });

  test("starts with installing the client, then the app", () => {
    const sections = [...readme.matchAll(/^## (.+)$/gm)].map((match) => match[1]);
    assert.deepEqual(sections.slice(0, 2), ["Install", "A complete React app"]);
  });
});

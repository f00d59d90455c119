// The package as an app receives it: what `npm pack` ships, what its `exports` map resolves to,
// that its types declare exactly what the modules export, and that the folder an app links to
// holds no React of its own.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const PACKAGE_DIR = realpathSync(fileURLToPath(new URL("..", import.meta.url)));
const manifest = JSON.parse(readFileSync(join(PACKAGE_DIR, "package.json"), "utf8"));

describe("the package", () => {
  test("no React is reachable from the package folder: an app's bundler finds only the app's", () => {
    // A bundler following a linked folder resolves the client's `import "react"` from the
    // folder's real path upwards; a React there (the client's test tools used to be) is a
    // second copy next to the app's, and the app's page stays blank.
    const fromHook = createRequire(join(PACKAGE_DIR, "src", "react.js"));
    for (const name of ["react", "react-dom", "react-test-renderer"]) {
      assert.throws(() => fromHook.resolve(name), { code: "MODULE_NOT_FOUND" }, `${name} resolves from the package folder`);
    }
  });

  test("no runtime dependency; React is a peer dependency only, and optional", () => {
    assert.deepEqual(manifest.peerDependencies, { react: ">=18" });
    assert.deepEqual(manifest.peerDependenciesMeta, { react: { optional: true } });
    assert.equal(manifest.dependencies, undefined, "the client has its own connection loop");
    assert.equal(manifest.devDependencies, undefined, "test tools belong in test/package.json");
  });

  test("npm pack ships the modules, their types, the README and nothing else", () => {
    const [packed] = JSON.parse(
      execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: PACKAGE_DIR, encoding: "utf8" }),
    );
    assert.deepEqual(packed.files.map((file) => file.path).sort(), [
      "README.md",
      "index.d.ts",
      "package.json",
      "react.d.ts",
      "src/index.js",
      "src/react.js",
    ]);
  });

  test("the exports map resolves each entry point by name, and nothing else", () => {
    const installed = dirname(fileURLToPath(import.meta.resolve("@wspush/client/package.json")));
    assert.equal(fileURLToPath(import.meta.resolve("@wspush/client")), join(installed, "src", "index.js"));
    assert.equal(fileURLToPath(import.meta.resolve("@wspush/client/react")), join(installed, "src", "react.js"));
    assert.throws(() => import.meta.resolve("@wspush/client/src/index.js"), { code: "ERR_PACKAGE_PATH_NOT_EXPORTED" });
  });

  for (const [entry, condition] of [
    ["@wspush/client", "."],
    ["@wspush/client/react", "./react"],
  ]) {
    test(`${entry}: its types declare exactly the values the module exports`, async () => {
      const declared = declaredValues(join(PACKAGE_DIR, manifest.exports[condition].types));
      const exported = Object.keys(await import(entry)).sort();
      assert.deepEqual(declared, exported);
    });
  }
});

/** The names of the values (functions, classes, constants) a declaration file exports. */
function declaredValues(path) {
  const program = ts.createProgram([path], { noEmit: true, types: [], strict: true });
  const checker = program.getTypeChecker();
  const module = checker.getSymbolAtLocation(program.getSourceFile(path));
  return checker
    .getExportsOfModule(module)
    .filter((symbol) => symbol.flags & ts.SymbolFlags.Value)
    .map((symbol) => symbol.name)
    .sort();
}

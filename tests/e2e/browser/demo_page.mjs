// The demo page in headless Chromium against the local stack: connect, receive a message
// sent with the `wspush` CLI, lose the socket when the gateway drops it, reconnect on its
// own, and receive again. Run by tests/e2e/test_browser.py, which starts the stack.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { launch } from "./stack.mjs";

const { DEMO_URL, MANAGEMENT_ENDPOINT, WSPUSH_CLI } = process.env;
const WAIT = { timeout: 20_000 };
const user = `browser-${Date.now()}`;

function send(type) {
  const out = execFileSync(WSPUSH_CLI, ["send", "--user", user, "--type", type, "--data", '{"from":"cli"}'], {
    encoding: "utf8",
  });
  return JSON.parse(out);
}

const connectionIdChanged = (previous) =>
  document.querySelector("#state").textContent === "open" &&
  document.querySelector("#connectionId").textContent !== "" &&
  document.querySelector("#connectionId").textContent !== previous;

const browser = await launch();
try {
  const page = await browser.newPage();
  const states = [];
  await page.exposeFunction("recordState", (state) => states.push(state));
  await page.addInitScript(() => {
    new MutationObserver(() => window.recordState(document.querySelector("#state")?.textContent)).observe(
      document,
      { subtree: true, childList: true, characterData: true },
    );
  });

  // Given the demo page, opened for a user on pc, connected on its own
  await page.goto(`${DEMO_URL}?userId=${encodeURIComponent(user)}&platform=pc&autoconnect=1`);
  await page.waitForFunction(connectionIdChanged, "", WAIT);
  const first = await page.textContent("#connectionId");

  // Then the page says how the stack authenticates, and shows the command that pushes to
  // this user; pasted into a fresh shell (no port variables but its own), it does
  assert.equal(await page.textContent("#authMode"), process.env.AUTH_MODE);
  const command = await page.textContent("#sendCommand");
  assert.ok(command.includes(`.venv/bin/wspush send --user ${user} --type hello`), command);
  const shell = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("WSPUSH_LOCAL_")),
  );
  execFileSync("sh", ["-c", command], { env: shell, encoding: "utf8" });
  await page.waitForSelector(`#messages li[data-type="hello"]`, WAIT);

  // When a message is sent to that user with the CLI, then it shows up on the page
  const queued = send("demo.first");
  const item = await page.waitForSelector(`#messages li[data-type="demo.first"]`, WAIT);
  assert.equal(await item.getAttribute("data-id"), queued.queued.id);

  // When the gateway drops the socket (the Management API's DELETE @connections/{id})
  const dropped = await fetch(`${MANAGEMENT_ENDPOINT}/@connections/${encodeURIComponent(first)}`, {
    method: "DELETE",
  });
  assert.ok(dropped.ok, `DELETE answered ${dropped.status}`);

  // Then the page reconnects by itself, as a new connection
  await page.waitForFunction(connectionIdChanged, first, WAIT);
  const second = await page.textContent("#connectionId");
  assert.ok(states.includes("reconnecting"), `states seen: ${states.join(" > ")}`);

  // And a message sent after the reconnect arrives too
  send("demo.second");
  await page.waitForSelector(`#messages li[data-type="demo.second"]`, WAIT);
  assert.equal(await page.locator("#messages li").count(), 3);
  await page.screenshot({ path: process.env.SCREENSHOT ?? "/tmp/wspush-demo.png", fullPage: true });
  console.log(JSON.stringify({ first, second, states: [...new Set(states)] }));
} finally {
  await browser.close();
}

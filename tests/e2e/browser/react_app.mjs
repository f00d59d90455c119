// A React app built outside the repository (client/example, installed the way client/README.md
// says) in headless Chromium against the local stack: it connects, shows its state, and
// renders a message sent with the `wspush` CLI. Run by tests/e2e/test_react_app.py, which
// builds and serves the app and starts the stack.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { launch } from "./stack.mjs";

const { APP_URL, TOKEN_URL, WSPUSH_CLI } = process.env;
const WAIT = { timeout: 20_000 };
const user = `react-${Date.now()}`;

const browser = await launch();
try {
  const page = await browser.newPage();
  // A page that throws (two copies of React: "Cannot read properties of null (reading
  // 'useRef')") stays blank: fail at once with what it said instead of waiting out a timeout.
  const problems = [];
  let pageFailed;
  const failed = new Promise((_, reject) => {
    pageFailed = reject;
  });
  failed.catch(() => {});
  page.on("pageerror", (error) => {
    problems.push(`page error: ${error.message}`);
    pageFailed(new Error(`the app threw: ${error.message}`));
  });
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  const tokenAnswers = [];
  page.on("response", (response) => {
    if (TOKEN_URL && response.url().startsWith(TOKEN_URL)) {
      tokenAnswers.push({
        status: response.status(),
        allowOrigin: response.headers()["access-control-allow-origin"] ?? null,
      });
    }
  });
  const until = async (what, promise) => {
    try {
      return await Promise.race([promise, failed]);
    } catch (error) {
      const body = await page.evaluate(() => document.body.innerHTML).catch(() => "?");
      throw new Error(`${what}: ${error.message}\n${problems.join("\n")}\npage body: ${body}`);
    }
  };

  // Given the app, opened for a user
  await page.goto(`${APP_URL}?userId=${encodeURIComponent(user)}`);

  // Then it connects, and shows the state and its connection id
  await until(
    "the app never showed an open connection",
    page.waitForFunction(
      () =>
        document.querySelector("#state")?.textContent === "open" &&
        document.querySelector("#connectionId")?.textContent !== "",
      null,
      WAIT,
    ),
  );
  const connectionId = await page.textContent("#connectionId");

  // When a service pushes a message to that user with the CLI
  const sent = JSON.parse(
    execFileSync(
      WSPUSH_CLI,
      ["send", "--user", user, "--type", "react.hello", "--data", '{"text":"hello from the CLI"}'],
      { encoding: "utf8" },
    ),
  );
  const id = sent.queued.id;

  // Then the app renders it
  const item = await until(
    "the pushed message never showed up",
    page.waitForSelector(`#messages li[data-id="${id}"]`, WAIT),
  );
  assert.equal(await item.getAttribute("data-type"), "react.hello");
  assert.match(await item.textContent(), /hello from the CLI/);
  console.log(JSON.stringify({ user, connectionId, id, origin: new URL(APP_URL).origin, tokenAnswers }));
} finally {
  await browser.close();
}

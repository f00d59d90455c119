// The demo page's channel panel in headless Chromium against the local stack: join a presence
// channel, see the page's own user, another user arrive, a channel message, and that user
// leave. Run by tests/e2e/test_browser.py, which plays the other user (a Python WebSocket
// client) and publishes the message; this script prints one JSON line per step it reached
// ({"step": "joined" | "seen" | "done", …}) and the test acts on them.
import assert from "node:assert/strict";
import { launch } from "./stack.mjs";

const { DEMO_URL, CHANNEL, PAGE_USER, OTHER_USER, MESSAGE_ID } = process.env;
const WAIT = { timeout: 20_000 };
// the first connect and subscribe may meet cold Lambdas on a busy machine
const FIRST_WAIT = { timeout: 60_000 };
const step = (name, extra = {}) => console.log(JSON.stringify({ step: name, ...extra }));
const member = (userId) => `#members li[data-user-id="${userId}"]`;

const browser = await launch();
let page;
try {
  page = await browser.newPage();
  const query = new URLSearchParams({ userId: PAGE_USER, platform: "web", autoconnect: "1", channel: CHANNEL, join: "1" });

  // Given the demo page, connected and joined to the channel from its address
  await page.goto(`${DEMO_URL}?${query}`);
  await page.waitForFunction(() => document.querySelector("#channelState")?.textContent === "subscribed", "", FIRST_WAIT);
  assert.equal(await page.inputValue("#channel"), CHANNEL);
  // Then its own user is a member (from the presence query)
  await page.waitForSelector(member(PAGE_USER), WAIT);
  step("joined", { connectionId: await page.textContent("#connectionId") });

  // When the other user subscribes and a message is published to the channel (the test does
  // both), then the page shows that member, and the message in the channel's list
  await page.waitForSelector(member(OTHER_USER), WAIT);
  const item = await page.waitForSelector(`#channelMessages li[data-id="${MESSAGE_ID}"]`, WAIT);
  assert.equal(await item.getAttribute("data-channel"), CHANNEL);
  assert.equal(await page.textContent("#memberCount"), "2");
  // and the channel message is not among the user's own messages
  assert.equal(await page.locator(`#messages li[data-id="${MESSAGE_ID}"]`).count(), 0);
  step("seen", { text: await item.textContent() });

  // When the other user leaves, then the page shows it gone
  await page.waitForSelector(member(OTHER_USER), { ...WAIT, state: "detached" });
  assert.equal(await page.textContent("#memberCount"), "1");
  const log = await page.textContent("#events");
  assert.ok(log.includes(`${OTHER_USER} joined`) && log.includes(`${OTHER_USER} left`), log);
  await page.screenshot({ path: process.env.SCREENSHOT ?? "/tmp/wspush-demo-channel.png", fullPage: true });
  step("done");
} catch (error) {
  // what the page saw, to tell a refusal or a dropped connection from a slow stack
  const shown = page
    ? await page
        .evaluate(() => ({
          state: document.querySelector("#state")?.textContent,
          channelState: document.querySelector("#channelState")?.textContent,
          members: document.querySelector("#members")?.textContent,
          events: [...document.querySelectorAll("#events li")].map((li) => li.textContent),
        }))
        .catch(() => null)
    : null;
  console.error(JSON.stringify({ page: shown }, null, 2));
  throw error;
} finally {
  await browser.close();
}

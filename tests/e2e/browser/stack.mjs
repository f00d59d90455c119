// What the browser scenarios share: headless Chromium launched as these machines need it, and
// messages sent through the local stack's send Lambda (delivered, and kept, when it answers).
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const { LAMBDA_ENDPOINT, SEND_FUNCTION, CHROMIUM = "/usr/bin/chromium" } = process.env;

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** One envelope, or a list of them (one invocation); fails on any refusal. */
export async function send(envelopes) {
  const response = await fetch(`${LAMBDA_ENDPOINT}/2015-03-31/functions/${SEND_FUNCTION}/invocations`, {
    method: "POST",
    body: JSON.stringify(envelopes),
  });
  const answers = await response.json();
  for (const answer of Array.isArray(answers) ? answers : [answers]) {
    assert.equal(answer.error, undefined, JSON.stringify(answer));
  }
  assert.equal(Array.isArray(answers), Array.isArray(envelopes), JSON.stringify(answers));
}

// wspush demo page: connect as a user on a platform and watch pushed messages arrive.
// DOM contract (used by the end-to-end browser test): #userId, #platform, #connect,
// #disconnect, #state (exactly the state word), #connectionId, #authMode, #sendCommand (the
// command that pushes to the user in #userId), and #messages, whose <li data-type data-id>
// items are the received messages (pongs excluded). Messages and events: newest last.
import { createWspushClient } from "../src/index.js";

const DEFAULT_WEBSOCKET_URL = "ws://127.0.0.1:3001";
const MAX_MESSAGES = 500;
const MAX_EVENTS = 200;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const ui = {
  form: /** @type {HTMLFormElement} */ ($("connectForm")),
  userId: /** @type {HTMLInputElement} */ ($("userId")),
  platform: /** @type {HTMLSelectElement} */ ($("platform")),
  wsUrl: /** @type {HTMLInputElement} */ ($("wsUrl")),
  connect: $("connect"),
  disconnect: $("disconnect"),
  state: $("state"),
  connectionId: $("connectionId"),
  messages: $("messages"),
  count: $("count"),
  emptyHint: $("emptyHint"),
  sendCommand: $("sendCommand"),
  authMode: $("authMode"),
  events: $("events"),
  ping: $("ping"),
  frame: /** @type {HTMLInputElement} */ ($("frame")),
  send: $("send"),
  clear: $("clear"),
};

/** @type {import("../src/index.js").WspushClient | null} */
let client = null;
let received = 0;
/** @type {{websocketUrl?: string, tokenUrl?: string, authMode?: string, exports?: string}} */
let config = {};

function showState(state) {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  document.body.dataset.state = state;
}

function showConnectionId(connectionId) {
  ui.connectionId.textContent = connectionId ?? "";
}

function time(ms) {
  const date = typeof ms === "number" ? new Date(ms) : new Date();
  return date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

function logEvent(text, kind = "info") {
  const li = document.createElement("li");
  li.className = kind;
  const when = document.createElement("time");
  when.textContent = time();
  li.append(when, " ", text);
  ui.events.append(li);
  while (ui.events.children.length > MAX_EVENTS) ui.events.firstElementChild?.remove();
  li.scrollIntoView({ block: "nearest" });
}

/** A word as a POSIX shell reads it back: as it is when that is safe, else single-quoted. */
function shellWord(text) {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/** The exact command that pushes a message to `userId` on this local stack. */
function showSendCommand(userId) {
  const send = `.venv/bin/wspush send --user ${shellWord(userId || "u1")} --type hello --data '{"text": "hi"}'`;
  ui.sendCommand.textContent = config.exports ? `${config.exports}\n${send}` : send;
}

function showMessage(message) {
  const li = document.createElement("li");
  li.dataset.type = message.type;
  li.dataset.id = message.id ?? "";

  const head = document.createElement("div");
  head.className = "head";
  const type = document.createElement("strong");
  type.className = "type";
  type.textContent = message.type;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${time(message.ts)}${message.id ? `  id ${message.id}` : ""}`;
  head.append(type, meta);

  const body = document.createElement("pre");
  body.textContent = JSON.stringify(message.data, null, 2) ?? "undefined";

  li.append(head, body);
  ui.messages.append(li);
  while (ui.messages.children.length > MAX_MESSAGES) ui.messages.firstElementChild?.remove();
  received += 1;
  ui.count.textContent = String(received);
  ui.emptyHint.hidden = true;
  li.scrollIntoView({ block: "nearest" });
}

/** Fetch a token for (userId, platform) from the dev server's tokenUrl, when it has one. */
function tokenProvider(tokenUrl, userId, platform) {
  return async () => {
    const url = new URL(tokenUrl, location.href);
    url.searchParams.set("userId", userId);
    url.searchParams.set("platform", platform);
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      return typeof body === "string" ? body : body.token;
    } catch {
      return text.trim();
    }
  };
}

function clearLists() {
  ui.messages.replaceChildren();
  ui.events.replaceChildren();
  received = 0;
  ui.count.textContent = "0";
  ui.emptyHint.hidden = false;
}

/** (Re)connect with the form's values; the lists start afresh for the new connection. */
function connect() {
  disconnect();
  clearLists();
  const userId = ui.userId.value.trim();
  const platform = ui.platform.value;
  const url = ui.wsUrl.value.trim() || config.websocketUrl || DEFAULT_WEBSOCKET_URL;
  if (!userId) {
    ui.userId.focus();
    return;
  }
  showSendCommand(userId);
  logEvent(`connecting to ${url} as ${userId} (${platform})`);
  const created = createWspushClient({
    url,
    userId,
    platform,
    token: config.tokenUrl ? tokenProvider(config.tokenUrl, userId, platform) : undefined,
    onStateChange: (state) => {
      if (client !== created) return;
      showState(state);
      logEvent(`state: ${state}`, state === "open" ? "ok" : "info");
    },
    onError: (error) => {
      if (client !== created) return;
      const code = error.code ? ` ${error.code}` : "";
      logEvent(`${error.kind}${code}: ${error.message}`, "error");
    },
    handlers: {
      "*": (message) => {
        if (message.type !== "pong") showMessage(message);
      },
    },
  });
  created.subscribe(({ connectionId }) => {
    if (client === created) showConnectionId(connectionId);
  });
  client = created;
  showState(created.state);
  showConnectionId(created.connectionId);
}

function disconnect() {
  if (!client) return;
  const closing = client;
  client = null;
  closing.close();
  showState("closed");
  showConnectionId(null);
  logEvent("disconnected");
}

async function loadConfig() {
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    if (response.ok) return await response.json();
  } catch {
    // served without the dev server (e.g. python3 -m http.server): use the defaults
  }
  return {};
}

async function main() {
  showState("closed");
  showConnectionId(null);
  const params = new URLSearchParams(location.search);
  if (params.get("userId")) ui.userId.value = params.get("userId");
  const platform = params.get("platform");
  if (platform) {
    if (![...ui.platform.options].some((option) => option.value === platform)) {
      ui.platform.append(new Option(platform, platform));
    }
    ui.platform.value = platform;
  }

  config = await loadConfig();
  ui.wsUrl.value = params.get("url") || config.websocketUrl || DEFAULT_WEBSOCKET_URL;
  ui.authMode.textContent = config.authMode ?? "unknown";
  showSendCommand(ui.userId.value.trim());
  ui.userId.addEventListener("input", () => showSendCommand(ui.userId.value.trim()));

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    connect();
  });
  ui.disconnect.addEventListener("click", disconnect);
  ui.ping.addEventListener("click", () => {
    if (!client?.ping()) logEvent("not connected", "error");
  });
  ui.send.addEventListener("click", () => {
    const text = ui.frame.value.trim();
    if (!text) return;
    if (client?.send(text)) logEvent(`sent ${text}`);
    else logEvent("not connected", "error");
  });
  ui.clear.addEventListener("click", clearLists);
  window.addEventListener("pagehide", () => client?.close());

  document.body.dataset.ready = "true";
  if (["1", "true", "yes"].includes((params.get("autoconnect") ?? "").toLowerCase())) connect();
}

main();

// wspush demo page: connect as a user on a platform and watch pushed messages arrive; join a
// channel and watch its members come and go and its messages arrive.
// DOM contract (used by the end-to-end browser test): #userId, #platform, #connect,
// #disconnect, #state (exactly the state word), #connectionId, #authMode, #sendCommand (the
// command that pushes to the user in #userId), and #messages, whose <li data-type data-id>
// items are the received messages (pongs, replies to the page's own requests and channel
// messages excluded). Channels: #channel, #join, #leave, #channelState (idle | subscribing |
// subscribed | error), #members (<li data-user-id>, the channel's members now),
// #memberCount, #channelMessages (<li data-type data-id data-channel>, the joined channel's
// messages). Messages and events: newest last.
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
  channelForm: /** @type {HTMLFormElement} */ ($("channelForm")),
  channel: /** @type {HTMLInputElement} */ ($("channel")),
  leave: $("leave"),
  channelState: $("channelState"),
  members: $("members"),
  memberCount: $("memberCount"),
  channelMessages: $("channelMessages"),
  channelHint: $("channelHint"),
  channelCommand: $("channelCommand"),
};

/** @type {import("../src/index.js").WspushClient | null} */
let client = null;
let received = 0;
/** @type {{websocketUrl?: string, tokenUrl?: string, authMode?: string, exports?: string}} */
let config = {};
/** The channel joined (kept across Connect: the new connection joins it again). */
let channel = "";
/** Ends the page's subscription and presence listener on the current client. */
let leaveChannel = () => {};

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
    onResync: ({ stream, epoch, seq, reason }) => {
      if (client !== created) return;
      const why = reason ? ` (${reason})` : "";
      logEvent(`resync ${stream}: missed messages could not be recovered${why}; now at ${epoch}/${seq}`, "error");
    },
    handlers: {
      "*": (message) => {
        // replies to the page's own requests go to the event log, channel messages to the
        // channel panel
        if (message.ref !== undefined) logEvent(`reply ${message.type} ${JSON.stringify(message.data)}`);
        else if (message.type !== "pong" && message.channel === undefined) showMessage(message);
      },
    },
  });
  created.subscribe(({ connectionId }) => {
    if (client === created) showConnectionId(connectionId);
  });
  client = created;
  showState(created.state);
  showConnectionId(created.connectionId);
  if (channel) join(channel);
}

function disconnect() {
  if (!client) return;
  leaveChannel();
  const closing = client;
  client = null;
  closing.close();
  showState("closed");
  showConnectionId(null);
  logEvent("disconnected");
}

// ---- the channel panel ----------------------------------------------------------

function showChannelState(state, detail = "") {
  ui.channelState.textContent = detail ? `${state}: ${detail}` : state;
  ui.channelState.dataset.state = state;
}

/** The command that publishes to `name` on this local stack. */
function showChannelCommand(name) {
  const send = `.venv/bin/wspush send --channel ${shellWord(name || "lobby:demo")} --type chat.message --data '{"text": "hi"}'`;
  ui.channelCommand.textContent = config.exports ? `${config.exports}\n${send}` : send;
}

function showMembers(members) {
  ui.members.replaceChildren(
    ...members.map((member) => {
      const li = document.createElement("li");
      li.dataset.userId = member.userId;
      li.textContent = member.userId;
      if (member.info !== null && member.info !== undefined) {
        const info = document.createElement("span");
        info.className = "info";
        info.textContent = JSON.stringify(member.info);
        li.append(info);
      }
      return li;
    }),
  );
  ui.memberCount.textContent = String(members.length);
}

function showChannelMessage(message) {
  const li = document.createElement("li");
  li.dataset.type = message.type;
  li.dataset.id = message.id ?? "";
  li.dataset.channel = message.channel ?? "";
  const type = document.createElement("strong");
  type.className = "type";
  type.textContent = message.type;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = time(message.ts);
  const body = document.createElement("pre");
  body.textContent = JSON.stringify(message.data, null, 2) ?? "undefined";
  li.append(type, meta, body);
  ui.channelMessages.append(li);
  while (ui.channelMessages.children.length > MAX_MESSAGES) ui.channelMessages.firstElementChild?.remove();
  ui.channelHint.hidden = true;
  li.scrollIntoView({ block: "nearest" });
}

/**
 * Join `name` on the current client: its messages, its members (when its namespace has
 * presence) and their comings and goings. The client sends the subscription again after
 * every reconnect and reads the members again.
 */
function join(name) {
  leaveChannel();
  channel = name;
  showChannelCommand(name);
  ui.channelMessages.replaceChildren();
  ui.channelHint.hidden = false;
  showMembers([]);
  if (!client) {
    showChannelState("idle", "connect first");
    return;
  }
  const current = client;
  let active = true;
  showChannelState("subscribing");
  logEvent(`joining ${name}`);
  const stopPresence = current.onPresence(name, (event) => {
    if (!active) return;
    showMembers(event.members);
    if (event.type === "join") logEvent(`${name}: ${event.userId} joined`, "ok");
    if (event.type === "leave") logEvent(`${name}: ${event.userId} left`);
  });
  const subscription = current.subscribe(name, (message) => {
    if (active) showChannelMessage(message);
  }, {
    onError: (error) => {
      if (active) showChannelState("error", error.code);
    },
  });
  subscription.then(
    () => {
      if (!active) return;
      showChannelState("subscribed");
      logEvent(`joined ${name}`, "ok");
    },
    (error) => {
      if (!active) return;
      showChannelState("error", error.code);
      logEvent(`${name}: ${error.code}: ${error.message}`, "error");
    },
  );
  leaveChannel = () => {
    active = false;
    stopPresence();
    subscription.unsubscribe();
    leaveChannel = () => {};
  };
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
  const channelParam = params.get("channel");
  if (channelParam) ui.channel.value = channelParam;
  showChannelCommand(ui.channel.value.trim());
  ui.channel.addEventListener("input", () => showChannelCommand(ui.channel.value.trim()));
  ui.channelForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = ui.channel.value.trim();
    if (name) join(name);
  });
  ui.leave.addEventListener("click", () => {
    if (!channel) return;
    logEvent(`left ${channel}`);
    leaveChannel();
    channel = "";
    showMembers([]);
    showChannelState("idle");
  });
  window.addEventListener("pagehide", () => client?.close());

  document.body.dataset.ready = "true";
  const yes = (value) => ["1", "true", "yes"].includes((value ?? "").toLowerCase());
  if (yes(params.get("join")) && ui.channel.value.trim()) channel = ui.channel.value.trim();
  if (yes(params.get("autoconnect"))) connect();
}

main();

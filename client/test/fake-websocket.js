// A stand-in for the browser WebSocket, driven by the tests.
// Each call to makeFakeWebSocket() returns a fresh class with its own list of instances.

export function makeFakeWebSocket() {
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    /** @type {FakeWebSocket[]} */
    static instances = [];

    static get last() {
      return FakeWebSocket.instances.at(-1);
    }

    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = FakeWebSocket.CONNECTING;
      this.binaryType = "blob";
      this.bufferedAmount = 0;
      /** @type {string[]} */
      this.sent = [];
      /** @type {{code: number | undefined, reason: string | undefined}[]} */
      this.closeCalls = [];
      /** @type {Record<string, Set<Function>>} */
      this.listeners = {};
      FakeWebSocket.instances.push(this);
    }

    addEventListener(type, listener) {
      (this.listeners[type] ??= new Set()).add(listener);
    }

    removeEventListener(type, listener) {
      this.listeners[type]?.delete(listener);
    }

    emit(type, event) {
      for (const listener of [...(this.listeners[type] ?? [])]) listener(event);
    }

    send(data) {
      if (this.readyState !== FakeWebSocket.OPEN) throw new Error("InvalidStateError: not open");
      this.sent.push(data);
    }

    /** Like a browser: the close event comes later, not during close(). */
    close(code, reason) {
      this.closeCalls.push({ code, reason });
      if (this.readyState === FakeWebSocket.CLOSED) return;
      this.readyState = FakeWebSocket.CLOSED;
      queueMicrotask(() => this.emit("close", { type: "close", code: code ?? 1005, reason: reason ?? "", wasClean: true }));
    }

    // ---- driven by the tests --------------------------------------------------

    /** The server accepted the handshake. */
    open() {
      this.readyState = FakeWebSocket.OPEN;
      this.emit("open", { type: "open" });
    }

    /** The server sent a frame: objects are sent as JSON, strings as they are. */
    receive(frame) {
      const data = typeof frame === "string" ? frame : JSON.stringify(frame);
      this.emit("message", { type: "message", data });
    }

    /** The connection dropped (server closed it, network died, handshake refused). */
    drop(code = 1006, reason = "") {
      this.readyState = FakeWebSocket.CLOSED;
      this.emit("close", { type: "close", code, reason, wasClean: false });
    }

    /** The handshake failed: like a browser, an error event and then a close event. */
    fail() {
      this.emit("error", { type: "error", message: "connection refused" });
      this.drop(1006);
    }

    /** The frames sent, parsed as JSON. */
    get frames() {
      return this.sent.map((text) => JSON.parse(text));
    }

    get pings() {
      return this.frames.filter((frame) => frame.action === "ping").length;
    }

    get query() {
      return Object.fromEntries(new URL(this.url).searchParams);
    }
  }
  return FakeWebSocket;
}

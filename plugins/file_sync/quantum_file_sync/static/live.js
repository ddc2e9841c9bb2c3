// The /ws connection: Subscribe (with `since` for catch-up), heartbeats, and reconnection with
// backoff. It knows the protocol, not the page: everything it learns is dispatched as events.
//
// Events: "state" {state, retryIn?}  state ∈ connecting | live | offline | unauthorized | stopped
//         "ack" {message}            the server's Ack (check `recovered`)
//         "operation" {message}      a FileOperation
//         "servererror" {message}    an Error message from the server

const PING_EVERY_MS = 20_000;
const SILENCE_LIMIT_MS = 50_000; // no message at all for this long: the link is dead
const ACK_TIMEOUT_MS = 10_000; // an upgrade that never answers Subscribe counts as a failure
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

export class LiveConnection extends EventTarget {
  #socket = null;
  #state = "stopped";
  #attempt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #ackTimer = null;
  #lastHeard = 0;

  /**
   * @param {object} options
   * @param {string} options.url           ws:// or wss:// URL of /ws
   * @param {string} options.clientId
   * @param {() => string|null} options.token     current token (sent in Subscribe)
   * @param {() => object|undefined} options.since {epoch, seq} to resume from
   */
  constructor({ url, clientId, token, since }) {
    super();
    this.url = url;
    this.clientId = clientId;
    this.token = token;
    this.since = since;
    addEventListener("online", () => this.#wake());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.#wake();
    });
  }

  get state() {
    return this.#state;
  }

  start() {
    if (this.#socket || this.#state === "connecting") return;
    this.#connect();
  }

  stop(state = "stopped") {
    clearTimeout(this.#retryTimer);
    this.#drop();
    this.#setState(state);
  }

  /** Skip the remaining backoff delay. */
  reconnectNow() {
    if (this.#state === "live" || this.#state === "connecting") return;
    clearTimeout(this.#retryTimer);
    this.#connect();
  }

  #wake() {
    if (this.#state === "offline") this.reconnectNow();
  }

  #setState(state, detail = {}) {
    this.#state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  #emit(type, message) {
    this.dispatchEvent(new CustomEvent(type, { detail: { message } }));
  }

  #connect() {
    this.#drop();
    this.#setState("connecting");
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch {
      this.#scheduleRetry();
      return;
    }
    this.#socket = socket;
    socket.addEventListener("open", () => {
      const subscribe = { type: "Subscribe", client_id: this.clientId };
      const since = this.since();
      if (since) subscribe.since = since;
      const token = this.token();
      if (token) subscribe.token = token;
      socket.send(JSON.stringify(subscribe));
      this.#heard();
      this.#ackTimer = setTimeout(() => {
        this.#drop();
        this.#scheduleRetry();
      }, ACK_TIMEOUT_MS);
      this.#pingTimer = setInterval(() => this.#heartbeat(), PING_EVERY_MS);
    });
    socket.addEventListener("message", (event) => {
      if (socket === this.#socket) this.#onMessage(event.data);
    });
    socket.addEventListener("close", () => {
      if (socket !== this.#socket) return;
      this.#drop();
      if (this.#state !== "unauthorized" && this.#state !== "stopped") this.#scheduleRetry();
    });
  }

  #onMessage(data) {
    this.#heard();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    switch (message.type) {
      case "Ack":
        clearTimeout(this.#ackTimer);
        this.#attempt = 0;
        this.#setState("live");
        this.#emit("ack", message);
        break;
      case "FileOperation":
        this.#emit("operation", message);
        break;
      case "Ping":
        this.#socket?.send(JSON.stringify({ type: "Pong" }));
        break;
      case "Error":
        if (message.code === "unauthorized") {
          this.stop("unauthorized");
        }
        this.#emit("servererror", message);
        break;
      default:
        break; // Pong, or a type added later
    }
  }

  #heard() {
    this.#lastHeard = Date.now();
  }

  #heartbeat() {
    if (Date.now() - this.#lastHeard > SILENCE_LIMIT_MS) {
      // A half-open TCP connection can take minutes to report close: treat it as gone now.
      this.#drop();
      this.#scheduleRetry();
      return;
    }
    this.#socket?.send(JSON.stringify({ type: "Ping" }));
  }

  #drop() {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#ackTimer);
    const socket = this.#socket;
    this.#socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  }

  #scheduleRetry() {
    const base = BACKOFF_MS[Math.min(this.#attempt, BACKOFF_MS.length - 1)];
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.#attempt += 1;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
    this.#setState("offline", { retryIn: delay, attempt: this.#attempt });
  }
}

// The wall protocol on the browser side: hello/resume, heartbeats, image frames, and
// reconnection with exponential backoff and full jitter. Rendering lives elsewhere.
// Speaks protocol 2 (operator actions, alert states, presets, pop-ups) and falls back to
// what a protocol-1 server sends: a snapshot without the v2 fields and no v2 messages.

const IMAGE_MAGIC = [0x49, 0x4f, 0x43, 0x49]; // "IOCI"
const AUTH_CODES = new Set([4001, 4003, 4004]);
export const PROTOCOL = 2;
const REQUEST_TIMEOUT_MS = 5000;
const MAX_PENDING = 64;

/** Parse a binary image frame: "IOCI" | u16 id length | u64 version | id | image. */
export function parseImageFrame(buf) {
  const view = new DataView(buf);
  for (let i = 0; i < 4; i++) {
    if (view.getUint8(i) !== IMAGE_MAGIC[i]) throw new Error("expected an IOCI image frame");
  }
  const idLen = view.getUint16(4);
  const version = Number(view.getBigUint64(6));
  const id = new TextDecoder().decode(new Uint8Array(buf, 14, idLen));
  return { id, version, image: new Uint8Array(buf, 14 + idLen) };
}

/** Delay before reconnect attempt `attempt` (0-based): full jitter over a capped exponential. */
export function backoffDelay(attempt, { base = 500, cap = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(cap, base * 2 ** attempt);
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

export class WallConnection {
  /**
   * @param {object} opts url, token, screen, and callbacks:
   *   onSnapshot(msg), onTile(header), onImage(id, version, bytes), onRemove(id),
   *   onState(state, detail) with state in connecting|live|reconnecting|refused,
   *   and for protocol 2: onAlertState(msg), onPreset(msg), onPopup(msg), onPopupEnd(msg).
   * `versions()` returns the {tileId: version} map held; `layoutHash()` the layout held.
   */
  constructor(opts) {
    this.opts = opts;
    this.attempt = 0;
    this.ws = null;
    this.heartbeatS = 10;
    this.lastRx = 0;
    this.timer = null;
    this.stats = { connects: 0, messages: 0, images: 0, closes: [], results: { ok: 0, error: 0 } };
    this.protocol = 1;     // what the server answered in its snapshot (absent: 1)
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, timer}
  }

  start() { this._connect(); }

  _connect() {
    const o = this.opts;
    o.onState(this.attempt ? "reconnecting" : "connecting", "");
    const ws = new WebSocket(o.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({
        type: "hello", protocol: PROTOCOL, token: o.token, screen: o.screen,
        layout: o.layoutHash(), versions: o.versions(),
      }));
      this.lastRx = performance.now();
    };
    ws.onmessage = (ev) => this._onMessage(ev);
    ws.onclose = (ev) => this._onClose(ev);
    ws.onerror = () => {}; // onclose follows with the code
  }

  _onMessage(ev) {
    this.lastRx = performance.now();
    this.stats.messages++;
    const o = this.opts;
    if (typeof ev.data !== "string") {
      const f = parseImageFrame(ev.data);
      this.stats.images++;
      o.onImage(f.id, f.version, f.image);
      return;
    }
    const msg = JSON.parse(ev.data);
    switch (msg.type) {
      case "snapshot":
        this.attempt = 0;
        this.stats.connects++;
        this.heartbeatS = msg.heartbeat_s || 10;
        this.protocol = typeof msg.protocol === "number" ? msg.protocol : 1;
        this._startHeartbeat();
        o.onSnapshot(msg);
        o.onState("live", msg.full ? "snapshot" : "resumed");
        break;
      case "tile": o.onTile(msg.tile); break;
      case "remove": o.onRemove(msg.id); break;
      case "ping": this._send({ type: "pong", t: msg.t }); break;
      case "pong": break;
      case "alert_state": o.onAlertState?.(msg); break;
      case "preset": o.onPreset?.(msg); break;
      case "popup": o.onPopup?.(msg); break;
      case "popup_end": o.onPopupEnd?.(msg); break;
      case "result": this._onResult(msg); break;
      default: console.warn("wall: unknown message type", msg.type);
    }
  }

  /**
   * Send a protocol-2 request (`action` or `preset`) and resolve with the server's
   * `result`: {ok: true} or {ok: false, error, detail}. Never rejects: a closed socket,
   * a server that speaks protocol 1 or no answer within 5 s resolve as ok:false with
   * error "offline"/"unsupported"/"timeout". At most 64 requests wait at once (the rest
   * resolve as "busy" at once), so a stuck server cannot grow the map.
   */
  request(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.resolve({ ok: false, error: "offline", detail: "not connected" });
    }
    if (this.protocol < 2) {
      return Promise.resolve({ ok: false, error: "unsupported",
        detail: `the server speaks wall protocol ${this.protocol}` });
    }
    if (this.pending.size >= MAX_PENDING) {
      return Promise.resolve({ ok: false, error: "busy", detail: `${MAX_PENDING} requests unanswered` });
    }
    const id = `r${this.nextId++}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ ok: false, error: "timeout", detail: `no answer in ${REQUEST_TIMEOUT_MS / 1000} s` });
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, timer });
      this._send({ ...msg, id });
    });
  }

  _onResult(msg) {
    this.stats.results[msg.ok ? "ok" : "error"]++;
    this.stats.lastResult = msg;
    const p = this.pending.get(msg.id);
    if (!p) return; // answered after its timeout, or not ours
    this.pending.delete(msg.id);
    clearTimeout(p.timer);
    p.resolve(msg);
  }

  _failPending(detail) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.resolve({ ok: false, error: "offline", detail });
    }
    this.pending.clear();
  }

  _send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  _startHeartbeat() {
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      // A silent server (no data, no ping) for 3 heartbeats is treated as gone.
      if (performance.now() - this.lastRx > this.heartbeatS * 3000) {
        this.ws.close(4009, "no message from server");
        this._onClose({ code: 4009, reason: "server silent", wasClean: false });
        return;
      }
      this._send({ type: "ping", t: Date.now() });
    }, this.heartbeatS * 1000);
  }

  _onClose(ev) {
    if (this.ws === null) return;
    const ws = this.ws;
    this.ws = null;
    ws.onclose = ws.onmessage = ws.onopen = null;
    clearInterval(this.timer);
    this._failPending("connection closed before the answer");
    this.stats.closes.push(ev.code);
    if (this.stats.closes.length > 20) this.stats.closes.shift();
    // Token problems will not fix themselves quickly: retry slowly, and say why.
    const refused = AUTH_CODES.has(ev.code);
    const delay = refused ? 60000 : backoffDelay(this.attempt++);
    const why = ev.reason || (ev.code === 1006 ? "connection lost" : `closed (${ev.code})`);
    this.opts.onState(refused ? "refused" : "offline", `${why}; retrying in ${Math.ceil(delay / 1000)} s`);
    setTimeout(() => this._connect(), delay);
  }
}

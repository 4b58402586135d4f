// The wall page: one screen, from `/?screen=NAME#token=TOKEN` (the token may also be a
// query parameter; the fragment keeps it out of server logs and Referer headers).

import { WallConnection } from "./connection.js";
import { formatAge, viewFor } from "./renderers.js";

const params = new URLSearchParams(location.search);
const frag = new URLSearchParams(location.hash.replace(/^#/, ""));
const screen = frag.get("screen") || params.get("screen") || "main";
const token = frag.get("token") || params.get("token") || "";
if (params.has("token")) {
  // Do not leave the token in the address bar or history.
  params.delete("token");
  history.replaceState(null, "", `${location.pathname}?${params}#token=${encodeURIComponent(token)}`);
}

const grid = document.getElementById("grid");
const connEl = document.getElementById("conn");
const connText = document.getElementById("conn-text");
const banner = document.getElementById("banner");
const barClock = document.getElementById("bar-clock");
const titleEl = document.getElementById("screen-title");

const state = {
  layout: null,       // layout message of the screen
  tiles: new Map(),   // tile id -> {placement, node, view, header}
  clockOffset: 0,     // server time - local time, seconds
  updates: 0,
};

function now() { return Date.now() / 1000 + state.clockOffset; }

function buildGrid(layout) {
  for (const t of state.tiles.values()) t.view.dispose?.();
  state.tiles.clear();
  state.layout = layout;
  titleEl.textContent = layout.title || layout.name;
  document.title = `${layout.title || layout.name} – operations wall`;
  grid.style.gridTemplateColumns = `repeat(${layout.columns}, minmax(0, 1fr))`;
  grid.style.gridTemplateRows = `repeat(${layout.rows}, minmax(0, 1fr))`;
  const nodes = layout.tiles.map((p) => {
    const node = document.createElement("section");
    node.className = "tile waiting";
    node.dataset.tile = p.tile;
    node.style.gridColumn = `${p.col} / span ${p.col_span}`;
    node.style.gridRow = `${p.row} / span ${p.row_span}`;
    const head = document.createElement("div");
    head.className = "tile-head";
    const title = document.createElement("span");
    title.className = "tile-title";
    title.textContent = p.title || p.tile;
    const age = document.createElement("span");
    age.className = "tile-age";
    head.append(title, age);
    const body = document.createElement("div");
    body.className = "tile-body";
    node.append(head, body);
    const entry = { placement: p, node, body, age, title, view: null, header: null };
    ensureView(entry, null);
    state.tiles.set(p.tile, entry);
    return node;
  });
  grid.replaceChildren(...nodes);
}

function ensureView(entry, kind) {
  const View = viewFor(entry.placement.view, kind, entry.placement.tile);
  if (entry.view && entry.view.constructor === View) return;
  entry.view?.dispose?.();
  entry.body.replaceChildren();
  entry.view = new View(entry.body, entry);
  entry.node.classList.toggle("camera", View.name === "CameraView");
  if (View.name === "ClockView") entry.node.classList.remove("waiting");
}

function applyTile(h) {
  const entry = state.tiles.get(h.id);
  if (!entry) return;
  if (entry.header && entry.header.version >= h.version) return;
  ensureView(entry, h.kind);
  entry.header = h;
  entry.view.update(h.payload || {});
  if (!entry.placement.title && h.payload?.label) entry.title.textContent = h.payload.label;
  entry.node.classList.remove("waiting");
  entry.node.dataset.version = String(h.version);
  state.updates++;
  tickTile(entry, now());
}

function clearTile(id) {
  const entry = state.tiles.get(id);
  if (!entry) return;
  entry.header = null;
  entry.view?.dispose?.();
  entry.view = null;
  ensureView(entry, null);
  entry.node.classList.add("waiting");
  delete entry.node.dataset.version;
}

function tickTile(entry, t) {
  const h = entry.header;
  entry.view.tick?.(t);
  const every = entry.placement.expected_interval_s;
  if (!h || every === null || every === undefined) {
    entry.node.classList.remove("stale");
    entry.node.dataset.stale = "false";
    entry.age.textContent = "";
    return;
  }
  const age = t - h.time;
  const stale = age > every;
  entry.node.classList.toggle("stale", stale);
  entry.node.dataset.stale = String(stale);
  entry.age.textContent = stale ? `STALE · ${formatAge(age)} old` : (age >= 10 ? `${formatAge(age)} ago` : "");
}

function tick() {
  const t = now();
  for (const entry of state.tiles.values()) tickTile(entry, t);
  barClock.textContent = new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

function setConnState(s, detail) {
  connEl.dataset.state = s;
  connText.textContent = { connecting: "connecting", live: "live", reconnecting: "reconnecting",
    offline: "offline", refused: "access refused" }[s] || s;
  if (s === "live") {
    banner.hidden = true;
  } else if (s === "offline" || s === "refused") {
    banner.hidden = false;
    banner.dataset.kind = s === "refused" ? "error" : "warn";
    banner.textContent = s === "refused"
      ? `Access refused: ${detail}`
      : `Connection lost: ${detail}. Tiles keep their last data and grey out when it ages.`;
  }
  document.body.dataset.conn = s;
}

if (!token) {
  setConnState("refused", "no token in the page address (#token=...)");
} else {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const conn = new WallConnection({
    url: `${scheme}//${location.host}/ws`,
    token,
    screen,
    layoutHash: () => state.layout?.hash ?? null,
    versions: () => {
      const v = {};
      for (const [id, e] of state.tiles) if (e.header) v[id] = e.header.version;
      return v;
    },
    onSnapshot(msg) {
      state.clockOffset = msg.server_time - Date.now() / 1000;
      if (msg.full || !state.layout || state.layout.hash !== msg.layout.hash) {
        buildGrid(msg.layout);
      }
      for (const id of msg.removed || []) clearTile(id);
      for (const h of msg.tiles) applyTile(h);
      tick();
    },
    onTile: applyTile,
    onRemove: clearTile,
    onImage(id, version, bytes) {
      const entry = state.tiles.get(id);
      if (entry?.header?.version === version && entry.view.image) {
        entry.view.image(bytes, entry.header.image_type);
      }
    },
    onState: setConnState,
  });
  window.__wall = { state, conn };
  conn.start();
}
tick();
setInterval(tick, 1000);

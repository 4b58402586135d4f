// The wall page: one screen, from `/?screen=NAME#token=TOKEN` (the token may also be a
// query parameter; the fragment keeps it out of server logs and Referer headers).
// Protocol 2 adds, for operator tokens, alert handling, pop-ups and presets; against a
// protocol-1 server the page shows what it did before (no controls, nothing flashing).

import { WallConnection } from "./connection.js";
import { FocusLayer } from "./focus.js";
import { detailViewFor, formatAge, viewFor } from "./renderers.js";

const params = new URLSearchParams(location.search);
const frag = new URLSearchParams(location.hash.replace(/^#/, ""));
const screen = frag.get("screen") || params.get("screen") || "main";
const token = frag.get("token") || params.get("token") || "";
if (params.has("token")) {
  // Do not leave the token in the address bar or history.
  params.delete("token");
  history.replaceState(null, "", `${location.pathname}?${params}#token=${encodeURIComponent(token)}`);
}

const $ = (id) => document.getElementById(id);
const grid = $("grid");
const connEl = $("conn");
const connText = $("conn-text");
const banner = $("banner");
const barClock = $("bar-clock");
const titleEl = $("screen-title");
const presetBadge = $("preset-badge");
const presetSelect = $("preset-select");
const roleBadge = $("role-badge");
const toast = $("toast");

const TOAST_MS = 5000;
const ACTION_LABEL = { ack: "Acknowledge", assign: "Assign", comment: "Comment", close: "Close" };

const state = {
  layout: null,       // layout of the screen (the active preset's, when one is active)
  tiles: new Map(),   // tile id -> {placement, node, view, header}
  held: new Map(),    // tile id -> {header, image: {version, bytes}}: kept across presets
  clockOffset: 0,     // server time - local time, seconds
  updates: 0,
};

/** The page context the views and panels read: who may act, and the alert states. */
const wall = {
  protocol: 1,
  role: "viewer",
  operator: null,
  alertStates: new Map(), // alert id -> state (protocol 2)
  preset: null,
  presets: [],
  overlays: {},           // camera tile id -> {zones, lines} (protocol 2 snapshot)
  clockOffset: 0,
  act: (msg) => request({ type: "action", ...msg }, ACTION_LABEL[msg.action] || msg.action),
};

function now() { return Date.now() / 1000 + state.clockOffset; }

const focus = new FocusLayer({
  popups: $("popups"),
  drill: $("drill"),
  wall,
  viewFor: (id) => {
    const p = state.tiles.get(id)?.placement;
    return detailViewFor(p?.view, state.held.get(id)?.header?.kind, id);
  },
  placement: (id) => state.tiles.get(id)?.placement ?? null,
  alertTile: () => [...state.tiles.values()].find((e) => e.view?.refresh)?.node ?? null,
  data: (id) => state.held.get(id) ?? null,
  alert: (id) => {
    for (const e of state.tiles.values()) {
      const item = e.view?.find?.(id);
      if (item) return item;
    }
    return null;
  },
});

function buildGrid(layout, { keep }) {
  for (const t of state.tiles.values()) t.view.dispose?.();
  state.tiles.clear();
  if (!keep) state.held.clear();
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
  fitTitles();
  // A preset keeps the data held for tiles it shares with the previous layout.
  for (const [id, held] of state.held) {
    const entry = state.tiles.get(id);
    if (!entry) continue;
    showTile(entry, held.header);
    if (held.image && held.image.version === held.header.version) entry.view.image?.(held.image.bytes, held.header.image_type);
  }
  focus.relayout();
}

/** The lines ``t`` takes unclamped (the CSS clamps a title to two lines and would hide the rest). */
function titleLines(t) {
  t.classList.add("measuring");
  const lh = parseFloat(getComputedStyle(t).lineHeight);
  const n = Math.round(t.getBoundingClientRect().height / lh);
  t.classList.remove("measuring");
  return n;
}

/** Shrink a tile title that does not fit in its two lines (the CSS wraps it), down to
 * 70% of its size; only then is it cut (with the full title as its tooltip). */
function fitTitle(entry) {
  const t = entry.title;
  t.style.fontSize = "";
  t.title = "";
  const base = parseFloat(getComputedStyle(t).fontSize);
  let size = base;
  while (titleLines(t) > 2 && size > base * 0.7) {
    size -= base * 0.05;
    t.style.fontSize = `${size}px`;
  }
  const fits = titleLines(t) <= 2;
  t.dataset.fit = fits ? (size < base ? "shrunk" : "fits") : "cut";
  if (!fits) t.title = t.textContent;
}

function fitTitles() {
  for (const entry of state.tiles.values()) fitTitle(entry);
}

function ensureView(entry, kind) {
  const View = viewFor(entry.placement.view, kind, entry.placement.tile);
  if (entry.view && entry.view.constructor === View) return;
  entry.view?.dispose?.();
  entry.body.replaceChildren();
  entry.view = new View(entry.body, entry, wall);
  entry.node.classList.toggle("camera", View.isCamera === true);
  if (View.name === "ClockView") entry.node.classList.remove("waiting");
}

function showTile(entry, h) {
  ensureView(entry, h.kind);
  entry.header = h;
  entry.view.update(h.payload || {});
  const label = h.payload?.label || h.payload?.title;
  if (!entry.placement.title && label && entry.title.textContent !== label) {
    entry.title.textContent = label;
    fitTitle(entry);
  }
  entry.node.classList.remove("waiting");
  entry.node.dataset.version = String(h.version);
  tickTile(entry, now());
}

function applyTile(h) {
  const held = state.held.get(h.id);
  if (held && held.header.version >= h.version) return;
  state.held.set(h.id, { header: h, image: null });
  const entry = state.tiles.get(h.id);
  if (entry) showTile(entry, h);
  state.updates++;
  if (entry?.view.refresh) focus.alertsChanged();
  focus.tileChanged(h.id);
}

function clearTile(id) {
  state.held.delete(id);
  const entry = state.tiles.get(id);
  if (!entry) return;
  entry.header = null;
  entry.view?.dispose?.();
  entry.view = null;
  ensureView(entry, null);
  entry.node.classList.add("waiting");
  delete entry.node.dataset.version;
}

function applyImage(id, version, bytes) {
  const held = state.held.get(id);
  if (held?.header.version !== version) return;
  held.image = { version, bytes };
  const entry = state.tiles.get(id);
  if (entry?.header?.version === version && entry.view.image) entry.view.image(bytes, held.header.image_type);
  focus.tileChanged(id);
}

function tickTile(entry, t) {
  const h = entry.header;
  entry.view.tick?.(t);
  const every = entry.placement.expected_interval_s;
  if (!h || every === null || every === undefined) {
    entry.node.classList.remove("stale");
    entry.node.dataset.stale = "false";
    if (entry.age.textContent) { entry.age.textContent = ""; fitTitle(entry); }
    return;
  }
  const age = t - h.time;
  const stale = age > every;
  entry.node.classList.toggle("stale", stale);
  entry.node.dataset.stale = String(stale);
  const text = stale ? `STALE · ${formatAge(age)} old` : (age >= 10 ? `${formatAge(age)} ago` : "");
  // The age shares the head with the title: fit the title again when it widens or narrows.
  const refit = text.length !== entry.age.textContent.length;
  entry.age.textContent = text;
  if (refit) fitTitle(entry);
}

function tick() {
  const t = now();
  for (const entry of state.tiles.values()) tickTile(entry, t);
  focus.tick(Date.now() / 1000);
  barClock.textContent = new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

function refreshAlerts() {
  for (const e of state.tiles.values()) e.view.refresh?.();
  focus.alertsChanged();
}

// -- operator: requests, results, presets ---------------------------------------------------

let toastTimer = null;
function showToast(text, kind = "error") {
  toast.textContent = text;
  toast.dataset.kind = kind;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, TOAST_MS);
}

/** Send a request; an answer other than ok is shown briefly, and the result returned. */
function request(msg, label) {
  if (!conn) return Promise.resolve({ ok: false, error: "offline", detail: "not connected" });
  return conn.request(msg).then((r) => {
    if (!r.ok) showToast(`${label} refused: ${r.error || "error"}${r.detail ? ` – ${r.detail}` : ""}`);
    return r;
  });
}

function setRole(role, operator) {
  wall.role = role === "operator" ? "operator" : "viewer";
  wall.operator = operator || null;
  document.body.dataset.role = wall.role;
  roleBadge.hidden = wall.role !== "operator";
  roleBadge.textContent = wall.role === "operator" ? `operator ${wall.operator || ""}`.trim() : "";
  presetSelect.hidden = !(wall.role === "operator" && wall.protocol >= 2);
}

function presetNames(list) {
  return (Array.isArray(list) ? list : [])
    .map((p) => (typeof p === "string" ? p : p?.name))
    .filter((n) => typeof n === "string" && n);
}

function setPreset(name, by) {
  wall.preset = name || null;
  wall.presetBy = by || null;
  presetBadge.hidden = !wall.preset;
  presetBadge.dataset.preset = wall.preset || "";
  presetBadge.dataset.by = by || "";
  const label = document.createElement("span");
  label.textContent = wall.preset ? `preset ${wall.preset}` : "";
  const who = document.createElement("span");
  who.className = "preset-by";
  // "rule:floods" -> "by rule floods", "operator:alice" -> "by alice"
  who.textContent = by ? `by ${by.startsWith("operator:") ? by.slice(9) : by.replace(":", " ")}` : "";
  presetBadge.replaceChildren(label, who);
  if (wall.preset && wall.preset !== "default" && !wall.presets.includes(wall.preset)) {
    wall.presets = [...wall.presets, wall.preset];
  }
  fillPresetSelect();
}

/** The switcher's value for what the screen shows: a preset, the pinned default, or rules. */
function presetChoice() {
  if (wall.preset) return wall.preset;
  return wall.presetBy?.startsWith("operator:") ? "default" : "";
}

function fillPresetSelect() {
  // "" drops the operator's choice (rules decide); "default" pins the default layout.
  const opts = [["", "layout: by rule"], ["default", "layout: default (pinned)"],
    ...wall.presets.filter((n) => n !== "default").map((n) => [n, `preset: ${n}`])];
  const current = [...presetSelect.options].map((o) => o.value).join("\n");
  if (current !== opts.map((o) => o[0]).join("\n")) {
    presetSelect.replaceChildren(...opts.map(([v, t]) => {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = t;
      return o;
    }));
  }
  presetSelect.value = presetChoice();
}

presetSelect.addEventListener("change", () => {
  const name = presetSelect.value || null;
  request({ type: "preset", preset: name }, "Preset").then((r) => {
    if (!r.ok) presetSelect.value = presetChoice(); // the screen did not switch
  });
});

document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") focus.closeDrill();
});

grid.addEventListener("click", (ev) => {
  const tile = ev.target.closest(".tile.camera");
  if (tile && !tile.classList.contains("waiting")) focus.toggleDrill(tile.dataset.tile, Date.now() / 1000);
});

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

function onSnapshot(msg) {
  state.clockOffset = wall.clockOffset = msg.server_time - Date.now() / 1000;
  wall.protocol = typeof msg.protocol === "number" ? msg.protocol : 1;
  document.body.dataset.protocol = String(wall.protocol);
  setRole(msg.role, msg.operator);
  if (Array.isArray(msg.presets)) wall.presets = presetNames(msg.presets);
  if (msg.overlays && typeof msg.overlays === "object") wall.overlays = msg.overlays;
  if (msg.full || !state.layout || state.layout.hash !== msg.layout.hash) {
    buildGrid(msg.layout, { keep: !msg.full });
  }
  for (const id of msg.removed || []) clearTile(id);
  for (const h of msg.tiles) applyTile(h);
  wall.alertStates = new Map(Object.entries(msg.alert_states || {}));
  setPreset(msg.preset ?? null, msg.preset_by ?? null);
  refreshAlerts();
  focus.setPopups(wall.protocol >= 2 ? msg.popups : []);
  tick();
}

function onPreset(msg) {
  if (msg.screen && msg.screen !== screen) return;
  if (msg.layout && typeof msg.layout === "object" && msg.layout.hash !== state.layout?.hash) {
    buildGrid(msg.layout, { keep: true });
    refreshAlerts();
  }
  setPreset(msg.preset ?? null, msg.by ?? null);
}

let conn = null;
if (!token) {
  setConnState("refused", "no token in the page address (#token=...)");
} else {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  conn = new WallConnection({
    url: `${scheme}//${location.host}/ws`,
    token,
    screen,
    layoutHash: () => state.layout?.hash ?? null,
    versions: () => {
      const v = {};
      for (const [id, e] of state.tiles) if (e.header) v[id] = e.header.version;
      return v;
    },
    onSnapshot,
    onTile: applyTile,
    onRemove: clearTile,
    onImage: applyImage,
    onState: setConnState,
    onAlertState(msg) {
      if (msg.alert === undefined || msg.alert === null) return;
      wall.alertStates.set(String(msg.alert), msg.state || {});
      refreshAlerts();
    },
    onPreset,
    onPopup: (msg) => focus.openPopup(msg),
    onPopupEnd: (msg) => focus.closePopup(msg.alert),
  });
  window.__wall = { state, wall, conn, focus };
  conn.start();
}
setRole("viewer", null);
window.addEventListener("resize", () => { focus.fitPopups(); fitTitles(); });
tick();
setInterval(tick, 1000);

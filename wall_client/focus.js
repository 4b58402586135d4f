// Enlarged tiles over the grid: pop-ups (opened by the server for a critical alert until
// `popup_end`) and drill-in (a camera clicked on this page, back on a second click or
// after DRILL_S). Each panel has its own view of the tile, fed the same headers and images
// as the grid tile; closing a panel disposes its view (and so its object URLs).

import { formatAge } from "./format.js";

export const DRILL_S = 30;
const MAX_POPUPS_SHOWN = 4;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** One enlarged tile: a head (title, caption, buttons) and a body with its own view. */
class FocusPanel {
  constructor(kind, tileId, placement, View, wall) {
    this.kind = kind;
    this.tileId = tileId;
    this.node = el("section", `focus ${kind} waiting`);
    this.node.dataset.tile = tileId;
    const head = el("div", "focus-head");
    this.title = el("span", "focus-title", placement?.title || tileId);
    this.caption = el("span", "focus-caption");
    this.buttons = el("span", "focus-buttons");
    head.append(this.title, this.caption, this.buttons);
    this.body = el("div", "tile-body");
    this.node.append(head, this.body);
    this.entry = { placement: placement || { tile: tileId }, node: this.node, body: this.body };
    this.view = new View(this.body, this.entry, wall);
    this.node.classList.toggle("camera", View.isCamera === true);
    this.version = null;
  }

  show(header, image) {
    if (!header) return;
    if (this.version === null || header.version > this.version) {
      this.version = header.version;
      if (!this.entry.placement.title && header.payload?.label) this.title.textContent = header.payload.label;
      this.view.update(header.payload || {});
      this.node.classList.remove("waiting");
    }
    if (image && image.version === this.version) this.view.image?.(image.bytes, header.image_type);
  }

  dispose() {
    this.view.dispose?.();
    this.node.remove();
  }
}

export class FocusLayer {
  /**
   * @param {object} o popups, drill (container elements), viewFor(tileId) -> View class,
   *   placement(tileId), data(tileId) -> {header, image} held for the tile, alert(id) ->
   *   the alert's payload item or null, alertTile() -> the grid's alert list tile element
   *   or null, wall (role, protocol, alertStates, act, clockOffset).
   */
  constructor(o) {
    this.o = o;
    this.popups = new Map(); // alert id -> {panel, msg}
    this.drill = null;
    this.drillUntil = 0;
    this.more = el("div", "popup-more");
    o.drill.addEventListener("click", () => this.closeDrill());
  }

  // -- pop-ups ---------------------------------------------------------------------------

  /** Open (or refresh) the pop-up of `msg` = {alert, tile, severity[, header]}. */
  openPopup(msg) {
    const id = String(msg.alert);
    const old = this.popups.get(id);
    if (old && old.msg.tile === msg.tile) { old.msg = msg; this._caption(id); return; }
    old?.panel.dispose();
    const panel = new FocusPanel("popup", msg.tile, this.o.placement(msg.tile), this.o.viewFor(msg.tile),
      this.o.wall);
    panel.node.dataset.alert = id;
    panel.node.dataset.severity = msg.severity || "critical";
    this.popups.set(id, { panel, msg });
    const held = this.o.data(msg.tile);
    const header = held?.header ?? (msg.header && typeof msg.header === "object" ? msg.header : null);
    panel.show(header, held?.image);
    this._caption(id);
    this._layoutPopups();
  }

  closePopup(alertId) {
    const p = this.popups.get(String(alertId));
    if (!p) return;
    p.panel.dispose();
    this.popups.delete(String(alertId));
    this._layoutPopups();
  }

  /** Replace every pop-up with `list` (a snapshot's `popups`, newest first). */
  setPopups(list) {
    const items = Array.isArray(list) ? list : [];
    const keep = new Set(items.map((m) => String(m.alert)));
    for (const id of [...this.popups.keys()]) if (!keep.has(id)) this.closePopup(id);
    // Oldest first, as live `popup` messages arrive: the newest are the ones shown.
    for (const m of [...items].reverse()) this.openPopup(m);
  }

  _layoutPopups() {
    const shown = [...this.popups.values()].slice(-MAX_POPUPS_SHOWN).map((p) => p.panel.node);
    const hidden = this.popups.size - shown.length;
    this.more.textContent = hidden > 0 ? `+${hidden} more pop-up${hidden > 1 ? "s" : ""}` : "";
    const c = this.o.popups;
    c.replaceChildren(...shown, ...(hidden > 0 ? [this.more] : []));
    c.dataset.count = String(shown.length);
    c.hidden = shown.length === 0;
    this.fitPopups();
  }

  /**
   * Keep the alert list usable while pop-ups are open: when the screen's alert tile sits
   * in the left or right part of the grid, the pop-ups cover the rest of it only.
   */
  fitPopups() {
    const c = this.o.popups;
    c.style.left = c.style.right = "";
    const list = this.o.alertTile?.();
    if (c.hidden || !list) return;
    const stage = c.parentElement.getBoundingClientRect();
    const r = list.getBoundingClientRect();
    if (r.width > stage.width / 2) return;
    if (r.left - stage.left >= stage.width / 2 - 1) c.style.right = `${stage.right - r.left}px`;
    else if (r.right - stage.left <= stage.width / 2 + 1) c.style.left = `${r.right - stage.left}px`;
  }

  _caption(id) {
    const p = this.popups.get(id);
    if (!p) return;
    const w = this.o.wall;
    const item = this.o.alert(id);
    const state = w.alertStates.get(id);
    const sev = p.msg.severity || item?.severity || "critical";
    const age = item?.raised_at ? ` · ${formatAge(Date.now() / 1000 + (w.clockOffset || 0) - item.raised_at)}` : "";
    p.panel.caption.textContent = `${sev.toUpperCase()} · ${item?.message || id}${age}`;
    p.panel.node.dataset.acked = String(Boolean(state?.acked_by));
    const canAct = w.role === "operator" && w.protocol >= 2;
    if (canAct && !p.panel.buttons.firstChild) {
      const ack = el("button", "act act-ack", "Acknowledge");
      ack.type = "button";
      ack.dataset.act = "ack";
      ack.addEventListener("click", (ev) => {
        ev.stopPropagation();
        w.act({ action: "ack", alert: id });
      });
      p.panel.buttons.append(ack);
    }
    if (!canAct) p.panel.buttons.replaceChildren();
    const ackBtn = p.panel.buttons.querySelector(".act-ack");
    if (ackBtn) ackBtn.disabled = Boolean(state?.acked_by);
  }

  // -- drill-in --------------------------------------------------------------------------

  toggleDrill(tileId, now) {
    if (this.drill && this.drill.tileId === tileId) { this.closeDrill(); return; }
    this.closeDrill();
    const panel = new FocusPanel("drill", tileId, this.o.placement(tileId), this.o.viewFor(tileId),
      this.o.wall);
    const held = this.o.data(tileId);
    panel.show(held?.header, held?.image);
    this.drill = panel;
    this.drillUntil = now + DRILL_S;
    this.o.drill.replaceChildren(panel.node);
    this.o.drill.hidden = false;
    this._drillCaption(now);
  }

  closeDrill() {
    if (!this.drill) return;
    this.drill.dispose();
    this.drill = null;
    this.o.drill.hidden = true;
  }

  _drillCaption(now) {
    const left = Math.max(0, Math.ceil(this.drillUntil - now));
    this.drill.caption.textContent = `analytics · click to return (${left} s)`;
  }

  // -- updates from the app --------------------------------------------------------------

  /** A tile's data or image changed: refresh every panel showing it. */
  tileChanged(tileId) {
    const held = this.o.data(tileId);
    if (!held) return;
    for (const p of this.popups.values()) if (p.panel.tileId === tileId) p.panel.show(held.header, held.image);
    if (this.drill?.tileId === tileId) this.drill.show(held.header, held.image);
  }

  /** Alert states or alert lists changed: captions and buttons. */
  alertsChanged() {
    for (const id of this.popups.keys()) this._caption(id);
  }

  tick(now) {
    if (this.drill) {
      if (now >= this.drillUntil) this.closeDrill(); else this._drillCaption(now);
    }
    for (const id of this.popups.keys()) this._caption(id);
  }

  /** The grid was rebuilt (a preset): panels keep their own views; refill them. */
  relayout() {
    for (const p of this.popups.values()) this.tileChanged(p.panel.tileId);
    this.fitPopups();
  }
}

// The alert list: which alerts are active, in which order, which flash, and the operator's
// controls (acknowledge, assign, comment, close). Rows are keyed by alert id and updated in
// place, so an open assign/comment field keeps its text while the list changes.

import { formatAge } from "./format.js";

const RANK = { critical: 0, warning: 1, info: 2 };
export const COMMENT_MAX = 500;
const NAME_MAX = 80;

/**
 * The alerts to list, in order, each as {item, state, flash, acked, cleared}.
 *
 * Protocol 1 (`v2` false): today's list, cleared alerts left out, nothing flashes.
 * Protocol 2: closed alerts and cleared+acknowledged ones leave the list; an
 * unacknowledged critical alert flashes and stays at the top; then by severity and
 * newest first. A cleared alert not yet acknowledged stays, marked cleared.
 */
export function activeAlerts(items, states, v2) {
  const out = [];
  const seen = new Set();
  for (const item of items || []) {
    if (!item || typeof item !== "object" || seen.has(String(item.id))) continue;
    seen.add(String(item.id)); // one row per alert id: the first listing wins
    const state = (v2 && states.get(String(item.id))) || null;
    const cleared = item.state === "cleared";
    const acked = Boolean(state?.acked_by);
    if (!v2 && cleared) continue;
    if (state?.closed || (cleared && acked)) continue;
    out.push({ item, state, cleared, acked, flash: v2 && item.severity === "critical" && !acked });
  }
  out.sort((a, b) => (b.flash - a.flash)
    || (RANK[a.item.severity] ?? 3) - (RANK[b.item.severity] ?? 3)
    || (b.item.raised_at ?? 0) - (a.item.raised_at ?? 0));
  return out;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A random idempotency key: a resend from the same editor is the same action. */
function newKey() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b); // randomUUID needs a secure context; a wall page may not be one
  return `e-${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
}

function button(act, label, title) {
  const b = el("button", `act act-${act}`, label);
  b.type = "button";
  b.dataset.act = act;
  b.title = title;
  return b;
}

/** What the meta line says about an alert's handling: who acknowledged, assignee, comments. */
function handlingText(state, cleared) {
  const parts = [];
  if (cleared) parts.push("cleared");
  if (state?.acked_by) parts.push(`ack ${state.acked_by}`);
  if (state?.assigned_to) parts.push(`→ ${state.assigned_to}`);
  const comments = state?.comments || [];
  if (comments.length) {
    const last = comments[comments.length - 1];
    parts.push(`${last.by}: “${last.text}”${comments.length > 1 ? ` (+${comments.length - 1})` : ""}`);
  }
  return parts.join(" · ");
}

class AlertRow {
  constructor(id, wall) {
    this.id = id;
    this.wall = wall;
    this.node = el("li", "alert");
    this.node.dataset.alert = id;
    this.sev = el("span", "sev");
    this.msg = el("span", "msg");
    this.age = el("span", "age");
    this.meta = el("span", "meta");
    this.node.append(this.sev, this.msg, this.age, this.meta);
    this.controls = null;
    this.editor = null;
    this.raisedAt = 0;
  }

  update(a, canAct) {
    const { item, state } = a;
    const sev = RANK[item.severity] === undefined ? "info" : item.severity;
    this.node.className = `alert ${sev}`;
    this.node.classList.toggle("flash", a.flash);
    this.node.classList.toggle("acked", a.acked);
    this.node.classList.toggle("cleared", a.cleared);
    this.node.dataset.flash = String(a.flash);
    this.node.dataset.acked = String(a.acked);
    this.msg.textContent = item.message || String(item.id);
    const handling = handlingText(state, a.cleared);
    this.meta.textContent = `${sev} · ${item.entity || ""}${handling ? ` · ${handling}` : ""}`;
    this.meta.title = this.meta.textContent;
    this.raisedAt = item.raised_at ?? 0;
    if (canAct && !this.controls) this._buildControls();
    if (!canAct && this.controls) {
      this.controls.remove();
      this.editor?.remove();
      this.controls = this.editor = null;
    }
    if (this.controls) this.controls.querySelector(".act-ack").disabled = a.acked;
  }

  _buildControls() {
    this.controls = el("div", "alert-actions");
    this.controls.append(
      button("ack", "Ack", "acknowledge: stops the flashing"),
      button("assign", "Assign", "assign to an operator"),
      button("comment", "Comment", "add a comment"),
      button("close", "Close", "close: leaves the list"),
    );
    this.controls.addEventListener("click", (ev) => {
      const act = ev.target.closest("button")?.dataset.act;
      if (!act) return;
      ev.stopPropagation();
      if (act === "ack" || act === "close") this.wall.act({ action: act, alert: this.id });
      else this._openEditor(act);
    });
    this.node.append(this.controls);
  }

  _openEditor(act) {
    this.editor?.remove();
    const form = el("form", "alert-editor");
    form.dataset.act = act;
    const input = el("input", "editor-input");
    input.name = act === "assign" ? "to" : "text";
    input.maxLength = act === "assign" ? NAME_MAX : COMMENT_MAX;
    input.placeholder = act === "assign" ? "operator name" : "comment";
    input.autocomplete = "off";
    input.required = true;
    const ok = el("button", "act act-send", act === "assign" ? "Assign" : "Add");
    ok.type = "submit";
    const cancel = el("button", "act act-cancel", "✕");
    cancel.type = "button";
    cancel.title = "cancel";
    form.append(input, ok, cancel);
    cancel.addEventListener("click", () => { form.remove(); this.editor = null; });
    const key = newKey(); // sending again after "unavailable" or a timeout: stored once
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      const msg = { action: act, alert: this.id, idempotency_key: key };
      if (act === "assign") msg.to = value; else msg.text = value;
      this.wall.act(msg).then((r) => { if (r.ok) { form.remove(); this.editor = null; } });
    });
    this.editor = form;
    this.node.append(form);
    input.focus();
  }
}

export class AlertsView {
  constructor(body, tile, wall) {
    this.wall = wall;
    this.tile = tile;
    this.list = el("ul", "alerts");
    this.empty = el("li", "alerts-empty", "No active alerts");
    this.rows = new Map(); // alert id -> AlertRow
    this.items = [];
    body.append(this.list);
  }

  update(p) {
    this.items = p.items || [];
    this.refresh();
  }

  /** Re-render from the held items and the wall's alert states (after either changed). */
  refresh() {
    const w = this.wall;
    const active = activeAlerts(this.items, w.alertStates, w.protocol >= 2);
    const canAct = w.role === "operator" && w.protocol >= 2;
    const seen = new Set();
    const nodes = active.map((a) => {
      const id = String(a.item.id);
      seen.add(id);
      let row = this.rows.get(id);
      if (!row) { row = new AlertRow(id, w); this.rows.set(id, row); }
      row.update(a, canAct);
      return row.node;
    });
    for (const id of [...this.rows.keys()]) if (!seen.has(id)) this.rows.delete(id);
    if (!nodes.length) nodes.push(this.empty);
    // Move only what is out of place: an input being typed in keeps its focus.
    nodes.forEach((n, i) => { if (this.list.children[i] !== n) this.list.insertBefore(n, this.list.children[i] || null); });
    while (this.list.children.length > nodes.length) this.list.lastChild.remove();
    const flashing = active.filter((a) => a.flash).length;
    this.tile.node?.classList.toggle("has-flash", flashing > 0);
    this.tick(Date.now() / 1000 + (w.clockOffset || 0));
  }

  tick(now) {
    for (const row of this.rows.values()) row.age.textContent = formatAge(now - row.raisedAt);
  }

  /** The payload item of alert `id`, if this tile lists it (pop-up captions). */
  find(id) {
    return this.items.find((a) => String(a?.id) === String(id)) || null;
  }
}

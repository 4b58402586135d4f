// Tile renderers: each builds its DOM once and updates it in place on every new version.
// A view is `new View(body, tile, wall)`: `tile` is the app's entry for the tile, `wall`
// the page context (role, protocol, alert states, act()).

import { AlertsView } from "./alerts.js";
import { formatAge, formatNumber } from "./format.js";
import { AnalyticsOverlay } from "./overlay.js";
import { LeaderboardView, ScorecardView, TargetView } from "./scorecards.js";

export { formatAge, formatNumber };

const SVG = "http://www.w3.org/2000/svg";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

/** A path through `values` scaled into a width x height box (y up). */
function linePath(points, width, height, pad = 2) {
  if (points.length < 2) return { line: "", area: "" };
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  const sx = (x) => ((x - x0) / (x1 - x0 || 1)) * width;
  const sy = (y) => height - pad - ((y - y0) / (y1 - y0)) * (height - 2 * pad);
  const line = points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
  return { line, area: `${line}L${width},${height}L0,${height}Z`, y0, y1, x0, x1 };
}

class KpiView {
  constructor(body) {
    const main = el("div", "kpi-main");
    this.value = el("span", "kpi-value", "–");
    this.unit = el("span", "kpi-unit");
    this.trend = el("span", "kpi-trend flat");
    main.append(this.value, this.unit);
    this.svg = svgEl("svg", { class: "spark", viewBox: "0 0 100 30", preserveAspectRatio: "none" });
    this.area = svgEl("path", { class: "area" });
    this.line = svgEl("path", { class: "line" });
    this.svg.append(this.area, this.line);
    body.append(main, this.trend, this.svg);
  }

  update(p) {
    this.value.textContent = formatNumber(p.value);
    this.unit.textContent = p.unit || "";
    const trend = (p.trend || []).filter((v) => typeof v === "number");
    const path = linePath(trend.map((v, i) => [i, v]), 100, 30);
    this.line.setAttribute("d", path.line);
    this.area.setAttribute("d", path.area);
    let dir = "flat", arrow = "→";
    if (trend.length >= 4 && typeof p.value === "number") {
      const prior = trend.slice(0, -1);
      const mean = prior.reduce((a, b) => a + b, 0) / prior.length;
      const rel = mean ? (p.value - mean) / Math.abs(mean) : 0;
      if (rel > 0.05) { dir = "up"; arrow = "▲"; } else if (rel < -0.05) { dir = "down"; arrow = "▼"; }
      this.trend.textContent = `${arrow} ${Math.abs(rel * 100).toFixed(0)}% vs recent mean`;
    } else {
      this.trend.textContent = "";
    }
    this.trend.className = `kpi-trend ${dir}`;
  }
}

class SeriesView {
  constructor(body) {
    const head = el("div", "series-head");
    this.value = el("span", "series-value", "–");
    this.unit = el("span", "series-unit");
    head.append(this.value, this.unit);
    const wrap = el("div", "chart-wrap");
    this.svg = svgEl("svg", { class: "chart spark", viewBox: "0 0 300 100", preserveAspectRatio: "none" });
    this.grid = [25, 50, 75].map((y) => svgEl("line", { class: "grid-line", x1: 0, x2: 300, y1: y, y2: y }));
    this.area = svgEl("path", { class: "area" });
    this.line = svgEl("path", { class: "line" });
    this.svg.append(...this.grid, this.area, this.line);
    this.labels = el("div", "chart-labels");
    this.max = el("span"); this.max.style.cssText = "top:0;left:0.2rem";
    this.min = el("span"); this.min.style.cssText = "bottom:0;left:0.2rem";
    this.from = el("span"); this.from.style.cssText = "bottom:0;right:0.2rem";
    this.labels.append(this.max, this.min, this.from);
    wrap.append(this.svg, this.labels);
    body.append(head, wrap);
  }

  update(p) {
    this.value.textContent = formatNumber(p.value);
    this.unit.textContent = p.unit || "";
    const pts = (p.series || []).filter((s) => Array.isArray(s) && s.length === 2);
    const path = linePath(pts, 300, 100, 4);
    this.line.setAttribute("d", path.line);
    this.area.setAttribute("d", path.area);
    if (pts.length >= 2) {
      this.max.textContent = formatNumber(path.y1);
      this.min.textContent = formatNumber(path.y0);
      this.from.textContent = `last ${formatAge(path.x1 - path.x0)}`;
    }
  }
}

class CameraView {
  static isCamera = true;

  constructor(body) {
    const stage = this._stage(body);
    this.img = el("img", "cam-img");
    this.img.alt = "";
    this.url = null;
    this.img.addEventListener("load", () => {
      // The previous image is no longer shown: release its memory.
      if (this.prevUrl) { URL.revokeObjectURL(this.prevUrl); this.prevUrl = null; }
    });
    const ov = el("div", "cam-overlay");
    this.badge = el("span", "badge", "…");
    const corner = el("div", "cam-badge");
    corner.append(this.badge);
    this.counts = el("span", "cam-counts");
    this.motion = el("span", "cam-motion");
    this.motion.title = "motion";
    ov.append(this.counts, this.motion);
    stage.append(this.img, corner, ov);
  }

  /** Where the image goes (the tile body; the detail view puts it in a stage of its own). */
  _stage(body) { return body; }

  update(p) {
    const health = p.health || "online";
    this.badge.textContent = health;
    this.badge.className = `badge ${health}`;
    this.badge.dataset.health = health;
    const counts = Object.entries(p.counts || {}).map(([k, v]) => `${v} ${k}`);
    this.counts.textContent = counts.join(" · ");
    // Motion as a bar along the bottom edge: visible from afar, no text to read.
    this.motion.style.width = typeof p.motion === "number" ? `${Math.round(p.motion * 100)}%` : "0";
  }

  image(bytes, type) {
    if (this.prevUrl) URL.revokeObjectURL(this.prevUrl); // never shown: release now
    this.prevUrl = this.url;
    this.url = URL.createObjectURL(new Blob([bytes], { type: type || "image/jpeg" }));
    this.img.src = this.url;
  }

  dispose() {
    for (const u of [this.url, this.prevUrl]) if (u) URL.revokeObjectURL(u);
    this.url = this.prevUrl = null;
  }
}

/** A camera enlarged (drill-in, pop-up): the whole image with its analytics drawn over it. */
export class CameraDetailView extends CameraView {
  constructor(body, tile, wall) {
    super(body);
    this.tile = tile;
    this.wall = wall;
    const facts = el("aside", "cam-facts");
    body.append(facts);
    this.analytics = new AnalyticsOverlay(this.stageEl, facts);
  }

  _stage(body) {
    body.classList.add("cam-detail");
    this.stageEl = el("div", "cam-stage");
    body.append(this.stageEl);
    return this.stageEl;
  }

  update(p) {
    super.update(p);
    const id = this.tile?.placement?.tile;
    this.analytics.update(p, this.tile?.placement, id ? this.wall?.overlays?.[id] : undefined);
  }
}

class TextView {
  constructor(body) { this.text = el("div", "text-body"); body.append(this.text); }
  update(p) { this.text.textContent = p.text ?? ""; }
}

class ClockView {
  constructor(body) {
    this.time = el("div", "clock-time");
    this.date = el("div", "clock-date");
    body.append(this.time, this.date);
    this.tick(Date.now() / 1000);
  }
  update() {}
  tick(now) {
    const d = new Date(now * 1000);
    this.time.textContent = d.toLocaleTimeString("en-GB", { hour12: false });
    this.date.textContent = d.toLocaleDateString("en-GB", { weekday: "long", day: "numeric", month: "long" });
  }
}

const VIEWS = { kpi: KpiView, series: SeriesView, chart: SeriesView, camera: CameraView,
  alerts: AlertsView, text: TextView, clock: ClockView,
  leaderboard: LeaderboardView, target: TargetView, scorecard: ScorecardView };
// Tile id prefix -> kind, for a tile whose data has not arrived yet.
const PREFIX_KIND = { sensor: "series", scorecard: "leaderboard", card: "scorecard" };

/** The view class for a placement's `view` (or, when auto, the tile's kind or id prefix).
 * A kind this client does not know renders as text (every tile kind carries a `text`). */
export function viewFor(view, kind, tileId) {
  if (view && view !== "auto" && VIEWS[view]) return VIEWS[view];
  if (kind) return VIEWS[kind] || TextView;
  const prefix = tileId.split(":", 1)[0];
  return VIEWS[PREFIX_KIND[prefix] || prefix] || TextView;
}

/** The view of an enlarged tile (drill-in, pop-up): cameras get their analytics overlay. */
export function detailViewFor(view, kind, tileId) {
  const View = viewFor(view, kind, tileId);
  return View === CameraView ? CameraDetailView : View;
}

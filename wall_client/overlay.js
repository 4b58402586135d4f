// The analytics overlay of a drilled-in camera: zones and counting lines drawn in SVG over
// the thumbnail, per-direction line counts, people per zone and the tamper state.
//
// Geometry is normalized (0..1, x right, y down), as vision/config.py defines zones
// (`{name, polygon: [[x, y], ...]}`) and lines (`{name, a: [x, y], b: [x, y], direction}`).
// It is read from the camera tile's payload (`zones`/`lines`, or `overlay.zones`/
// `overlay.lines`), else from the snapshot's `overlays` (protocol 2: per camera tile, from
// the cameras' analytics settings), else from the tile's placement (`overlay`). Counts
// come from the payload's `counts` ("people:<zone>", "<line>:in", "<line>:out"), the
// tamper state from its `tamper` when the producer reports one.

const SVG = "http://www.w3.org/2000/svg";
const MAX_SHAPES = 64;

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function isPoint(p) {
  return Array.isArray(p) && p.length >= 2 && Number.isFinite(p[0]) && Number.isFinite(p[1]);
}

/** Zones and lines of a camera tile (payload, else `extra`, else placement); bad shapes dropped. */
export function overlayGeometry(payload, placement, extra) {
  const src = [payload, payload?.overlay, extra, placement?.overlay].find(
    (o) => o && (Array.isArray(o.zones) || Array.isArray(o.lines))) || {};
  const zones = (Array.isArray(src.zones) ? src.zones : []).slice(0, MAX_SHAPES)
    .map((z) => ({ name: String(z?.name ?? ""), points: (z?.polygon || z?.points || []).filter(isPoint) }))
    .filter((z) => z.points.length >= 3);
  const lines = (Array.isArray(src.lines) ? src.lines : []).slice(0, MAX_SHAPES)
    .filter((l) => isPoint(l?.a) && isPoint(l?.b))
    .map((l) => ({ name: String(l.name ?? ""), a: l.a, b: l.b, direction: l.direction || "left_to_right" }));
  return { zones, lines };
}

/** The raised tamper conditions, from `tamper` as {covered, defocused, moved}, a list or a string. */
export function tamperFlags(t) {
  if (t === undefined || t === null) return null; // not reported
  if (typeof t === "string") return t && t !== "ok" && t !== "none" ? [t] : [];
  if (Array.isArray(t)) return t.map(String);
  if (typeof t === "object") {
    return ["covered", "defocused", "moved"].filter((k) => t[k] === true)
      .concat(Array.isArray(t.active) ? t.active.map(String) : []);
  }
  return t ? ["tampered"] : [];
}

export class AnalyticsOverlay {
  /** `stage` holds the image (object-fit: contain); `facts` is the side panel. */
  constructor(stage, facts) {
    this.svg = svgEl("svg", { class: "cam-analytics", preserveAspectRatio: "xMidYMid meet" });
    stage.append(this.svg);
    this.tamper = el("div", "cam-tamper");
    this.table = el("div", "cam-facts-body");
    facts.append(this.tamper, this.table);
  }

  update(p, placement, extra) {
    const w = Number(p.width) > 0 ? Number(p.width) : 640;
    const h = Number(p.height) > 0 ? Number(p.height) : 360;
    this.svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const counts = p.counts || {};
    const { zones, lines } = overlayGeometry(p, placement, extra);
    const font = h * 0.05;
    const shapes = [];
    for (const z of zones) {
      const pts = z.points.map(([x, y]) => `${(x * w).toFixed(1)},${(y * h).toFixed(1)}`).join(" ");
      const g = svgEl("g", { class: "zone", "data-zone": z.name });
      const cx = z.points.reduce((s, q) => s + q[0], 0) / z.points.length * w;
      const cy = z.points.reduce((s, q) => s + q[1], 0) / z.points.length * h;
      const n = counts[`people:${z.name}`];
      const label = svgEl("text", { x: cx.toFixed(1), y: cy.toFixed(1), "font-size": font.toFixed(1),
        "text-anchor": "middle", "dominant-baseline": "middle" });
      label.textContent = n === undefined ? z.name : `${z.name}: ${n}`;
      g.append(svgEl("polygon", { points: pts }), label);
      shapes.push(g);
    }
    for (const l of lines) {
      const [ax, ay, bx, by] = [l.a[0] * w, l.a[1] * h, l.b[0] * w, l.b[1] * h];
      const len = Math.hypot(bx - ax, by - ay) || 1;
      // The side a crossing must reach to count "in": right of a->b for left_to_right
      // (y points down, so the right-hand normal of (dx, dy) is (-dy, dx)).
      const sign = l.direction === "right_to_left" ? -1 : 1;
      const nx = (-(by - ay) / len) * sign, ny = ((bx - ax) / len) * sign;
      const mx = (ax + bx) / 2, my = (ay + by) / 2, arrow = h * 0.08;
      const g = svgEl("g", { class: "line", "data-line": l.name });
      g.append(
        svgEl("line", { x1: ax, y1: ay, x2: bx, y2: by }),
        svgEl("line", { class: "dir", x1: mx, y1: my, x2: mx + nx * arrow, y2: my + ny * arrow }),
        svgEl("circle", { cx: mx + nx * arrow, cy: my + ny * arrow, r: h * 0.012 }),
      );
      const label = svgEl("text", { x: (mx - nx * font * 1.2).toFixed(1), y: (my - ny * font * 1.2).toFixed(1),
        "font-size": font.toFixed(1), "text-anchor": "middle", "dominant-baseline": "middle" });
      label.textContent = `${l.name}: in ${counts[`${l.name}:in`] ?? 0} · out ${counts[`${l.name}:out`] ?? 0}`;
      g.append(label);
      shapes.push(g);
    }
    this.svg.replaceChildren(...shapes);

    const flags = tamperFlags(p.tamper);
    // The detector has no reference yet (just started, or the scene was reset).
    const warming = flags !== null && !flags.length && p.tamper?.ready === false;
    this.tamper.className = `cam-tamper ${flags === null || warming ? "unknown" : flags.length ? "raised" : "ok"}`;
    this.tamper.dataset.tamper = flags === null ? "unknown" : warming ? "warming" : flags.join(",") || "none";
    this.tamper.textContent = flags === null ? "Tamper: not reported" : warming ? "Tamper: warming up"
      : flags.length ? `TAMPER: ${flags.join(", ")}` : "Tamper: none";

    const rows = [];
    const row = (k, v, cls) => {
      const r = el("div", `fact ${cls || ""}`);
      r.append(el("span", "fact-k", k), el("span", "fact-v", v));
      rows.push(r);
    };
    for (const l of lines) {
      row(`${l.name} in / out`, `${counts[`${l.name}:in`] ?? 0} / ${counts[`${l.name}:out`] ?? 0}`, "fact-line");
      if (counts[`people:${l.name}:in`] !== undefined) {
        row(`people across ${l.name} in / out`,
          `${counts[`people:${l.name}:in`]} / ${counts[`people:${l.name}:out`] ?? 0}`, "fact-line");
      }
    }
    for (const z of zones) row(`people in ${z.name}`, String(counts[`people:${z.name}`] ?? "–"), "fact-zone");
    // Counters not tied to a drawn zone or line (people total, vehicles, ...).
    const drawn = new Set([...lines.flatMap((l) => [`${l.name}:in`, `${l.name}:out`,
      `people:${l.name}:in`, `people:${l.name}:out`]),
      ...zones.map((z) => `people:${z.name}`)]);
    for (const [k, v] of Object.entries(counts)) if (!drawn.has(k)) row(k, String(v));
    if (typeof p.motion === "number") row("motion", `${Math.round(p.motion * 100)} %`);
    if (typeof p.fps === "number") row("frames/s", p.fps.toFixed(1));
    if (lines.length) row("● on a line", "its “in” side", "fact-legend");
    if (!zones.length && !lines.length) row("zones / lines", "none configured", "fact-none");
    this.table.replaceChildren(...rows);
  }
}

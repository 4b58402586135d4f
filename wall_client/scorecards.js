// Scorecard renderers: leaderboard (units ranked, rank-change arrows, score bars),
// target (an indicator's value against its target, a progress bar) and scorecard (a
// unit's areas with their points out of their maximum, and the total). Payloads:
// ioc/scorecard/_tiles.py. Sizes follow the tile (container query units), so a row stays
// readable from across the room whatever the tile's span, at 1080p as at 4K.

import { formatNumber } from "./format.js";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const FLAG_TEXT = { no_data: "no data", low_denominator: "⚠ few cases", provisional: "provisional" };

/** The rank change as an arrow: [text, class]. Moving up is good (green). */
export function rankArrow(change, ranked = true) {
  if (!ranked) return ["", "none"];
  if (change === null || change === undefined) return ["new", "new"];
  if (change > 0) return [`▲${change}`, "up"];
  if (change < 0) return [`▼${-change}`, "down"];
  return ["=", "same"];
}

function pct(share) {
  if (typeof share !== "number" || !Number.isFinite(share)) return "0%";
  return `${Math.max(0, Math.min(100, share * 100)).toFixed(1)}%`;
}

/** The caption under the title: period, where, flags (a provisional period is marked). */
function caption(node, parts, flags) {
  node.replaceChildren();
  node.append(el("span", "sc-period", parts.filter(Boolean).join(" · ")));
  for (const f of flags || []) {
    if (f === "no_data") continue; // shown on the row/value itself
    node.append(el("span", `sc-flag ${f}`, FLAG_TEXT[f] || f));
  }
}

export class LeaderboardView {
  constructor(body) {
    body.classList.add("sc-body");
    this.caption = el("div", "sc-caption");
    this.list = el("ol", "lb-rows");
    body.append(this.caption, this.list);
  }

  update(p) {
    const rows = Array.isArray(p.rows) ? p.rows : [];
    const any = (f) => rows.some((r) => (r.flags || []).includes(f));
    caption(this.caption, [p.period_key, p.level, (p.parent || []).join(" / ")],
      [any("provisional") && "provisional", any("low_denominator") && "low_denominator"].filter(Boolean));
    this.list.style.setProperty("--rows", String(Math.max(rows.length, 4)));
    this.list.replaceChildren(...rows.map((r) => {
      const ranked = r.rank !== null && r.rank !== undefined;
      const li = el("li", "lb-row");
      li.dataset.unit = String(r.unit);
      li.dataset.rank = ranked ? String(r.rank) : "";
      li.dataset.change = r.rank_change === null || r.rank_change === undefined ? "" : String(r.rank_change);
      if (!ranked) li.classList.add("no-data");
      const [arrow, dir] = rankArrow(r.rank_change, ranked);
      const bar = el("span", "lb-bar");
      const fill = el("span", "lb-fill");
      fill.style.width = ranked ? pct(r.share) : "0%";
      bar.append(fill);
      const low = (r.flags || []).includes("low_denominator");
      const name = el("span", "lb-unit");
      name.append(el("span", "lb-name", String(r.unit)));
      if (low) {
        const mark = el("span", "lb-low", "⚠");
        mark.title = FLAG_TEXT.low_denominator;
        name.append(mark);
      }
      li.append(
        el("span", "lb-rank", ranked ? String(r.rank) : "–"),
        name,
        ranked ? bar : el("span", "lb-nodata", "no data"),
        el("span", "lb-score", ranked ? formatNumber(r.score) : ""),
        el("span", `lb-change ${dir}`, arrow),
      );
      return li;
    }));
  }
}

export class TargetView {
  constructor(body) {
    body.classList.add("sc-body");
    this.caption = el("div", "sc-caption");
    const main = el("div", "tg-main");
    this.value = el("span", "tg-value", "–");
    this.unit = el("span", "tg-unit");
    this.of = el("span", "tg-of");
    main.append(this.value, this.unit, this.of);
    this.bar = el("div", "tg-bar");
    this.fill = el("span", "tg-fill");
    this.bar.append(this.fill, el("span", "tg-mark"));
    const foot = el("div", "tg-foot");
    this.progress = el("span", "tg-progress");
    this.score = el("span", "tg-score");
    foot.append(this.progress, this.score);
    body.append(this.caption, main, this.bar, foot);
  }

  update(p) {
    const u = p.value_unit || "";
    caption(this.caption, [p.period_key, p.unit], p.flags);
    const none = p.value === null || p.value === undefined;
    this.value.textContent = none ? "no data" : formatNumber(p.value);
    this.value.classList.toggle("none", none);
    this.unit.textContent = none ? "" : u;
    this.of.textContent = p.target === null || p.target === undefined ? "no target"
      : `target ${formatNumber(p.target)}${u}`;
    const prog = typeof p.progress === "number" ? p.progress : null;
    // The bar spans 0..max(target, value): the target mark sits at 100% of the target.
    const span = prog !== null && prog > 1 ? prog : 1;
    this.fill.style.width = prog === null ? "0%" : pct(prog / span);
    this.bar.style.setProperty("--mark", pct(1 / span));
    const reached = prog !== null && prog >= 1;
    this.bar.dataset.reached = String(reached);
    this.progress.textContent = prog === null ? "" : reached ? "target reached"
      : `${Math.round(prog * 100)}% of target`;
    this.progress.dataset.progress = prog === null ? "" : String(prog);
    this.score.textContent = `${formatNumber(p.score)} / ${formatNumber(p.max_score)} pts`;
  }
}

export class ScorecardView {
  constructor(body) {
    body.classList.add("sc-body");
    this.caption = el("div", "sc-caption");
    const head = el("div", "card-head");
    this.total = el("span", "card-total", "–");
    this.max = el("span", "card-max");
    this.rank = el("span", "card-rank");
    head.append(this.total, this.max, this.rank);
    this.list = el("ul", "card-areas");
    body.append(this.caption, head, this.list);
  }

  update(p) {
    caption(this.caption, [p.period_key, p.unit], p.flags);
    this.total.textContent = formatNumber(p.total);
    this.max.textContent = `/ ${formatNumber(p.max_total)} points`;
    const ranked = p.rank !== null && p.rank !== undefined;
    const [arrow, dir] = rankArrow(p.rank_change, ranked);
    // A unit alone in its parent (the province) has no rank worth showing.
    const alone = typeof p.ranked_of === "number" && p.ranked_of <= 1;
    this.rank.textContent = ranked && !alone ? `rank ${p.rank} of ${p.ranked_of ?? "?"} ${arrow}` : "";
    this.rank.className = `card-rank ${dir}`;
    const areas = Array.isArray(p.areas) ? p.areas : [];
    this.list.style.setProperty("--rows", String(Math.max(areas.length, 4)));
    this.list.replaceChildren(...areas.map((a) => {
      const li = el("li", "card-area");
      li.dataset.area = String(a.area);
      const measured = a.indicators === undefined || a.indicators > 0;
      if (!measured) li.classList.add("unmeasured");
      const bar = el("span", "card-bar");
      const fill = el("span", "card-fill");
      fill.style.width = a.max_points > 0 ? pct(a.points / a.max_points) : "0%";
      bar.append(fill);
      li.append(el("span", "card-label", String(a.label ?? a.area)),
        measured ? bar : el("span", "card-none", "no indicator"),
        el("span", "card-points", `${formatNumber(a.points)} / ${formatNumber(a.max_points)}`));
      return li;
    }));
  }
}

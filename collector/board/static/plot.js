// A small SVG line chart for readings around a fault: time on x, the reading on y, dashed
// threshold lines, a dotted line when the task opened, and event markers with labels.
// No dependencies; every element carries a <title> so the values are readable without colour.

const NS = "http://www.w3.org/2000/svg";
const W = 640, H = 240, M = { l: 52, r: 12, t: 26, b: 28 };

function el(name, attrs = {}, text = "") {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text) node.textContent = text;
  return node;
}

function titled(node, text) {
  node.appendChild(el("title", {}, text));
  return node;
}

export function timeLabel(ts) {
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function niceNumber(v) {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
  return v.toFixed(1);
}

/** Ticks from lo to hi, about `count` of them, at round steps. */
export function ticks(lo, hi, count = 4) {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

/**
 * Draw one series.
 * @param {{key:string,label:string,unit:string,points:number[][],limits:Object<string,number>}} series
 * @param {{start:number,end:number,opened?:number,events?:Array<{ts:number,label:string,message:string}>}} ctx
 * @returns {SVGSVGElement}
 */
export function lineChart(series, ctx) {
  const pts = series.points;
  const xs = pts.map((p) => p[0]);
  // from the first reading (or a minute before the task opened) to the last reading or event
  const marks = [ctx.opened, ...(ctx.events || []).map((e) => e.ts)].filter((t) => t !== undefined && t >= (ctx.start ?? -Infinity) && t <= (ctx.end ?? Infinity));
  const lo = Math.min(xs[0], ...marks.map((t) => t - 60));
  const hi = Math.max(xs[xs.length - 1], ...marks);
  const x0 = lo - (hi - lo) * 0.02;
  const x1 = hi + (hi - lo) * 0.04;
  const values = pts.map((p) => p[1]).concat(Object.values(series.limits || {}));
  let y0 = Math.min(...values), y1 = Math.max(...values);
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.08;
  y0 -= pad; y1 += pad;
  if (Math.min(...pts.map((p) => p[1])) >= 0 && y0 < 0) y0 = 0;
  const sx = (x) => M.l + ((x - x0) / Math.max(1e-9, x1 - x0)) * (W - M.l - M.r);
  const sy = (y) => H - M.b - ((y - y0) / (y1 - y0)) * (H - M.t - M.b);

  const last = pts[pts.length - 1];
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "data-key": series.key, "data-points": pts.length,
    "aria-label": `${series.label}: ${pts.length} readings from ${timeLabel(pts[0][0])} to ${timeLabel(last[0])}, latest ${niceNumber(last[1])} ${series.unit}`,
  });
  for (const v of ticks(y0, y1)) {
    svg.appendChild(el("line", { class: "axis", x1: M.l, x2: W - M.r, y1: sy(v), y2: sy(v) }));
    svg.appendChild(el("text", { x: M.l - 6, y: sy(v) + 4, "text-anchor": "end" }, niceNumber(v)));
  }
  const span = x1 - x0;
  const tstep = [60, 120, 300, 600, 900, 1800, 3600, 7200].find((s) => span / s <= 5) || 14400;
  for (let t = Math.ceil(x0 / tstep) * tstep; t <= x1; t += tstep) {
    svg.appendChild(el("text", { x: sx(t), y: H - 8, "text-anchor": "middle" }, timeLabel(t).slice(0, 5)));
  }
  svg.appendChild(el("text", { x: M.l, y: 14 }, series.unit));
  for (const [name, value] of Object.entries(series.limits || {})) {
    const label = name.replace(/_/g, " ").replace(/ (celsius|watts|mhz)$/, "");
    svg.appendChild(titled(el("line", { class: "limit", x1: M.l, x2: W - M.r, y1: sy(value), y2: sy(value) }),
      `${label}: ${niceNumber(value)} ${series.unit}`));
    svg.appendChild(el("text", { x: M.l + 4, y: sy(value) - 3 }, `${label} ${niceNumber(value)}`));
  }
  if (ctx.opened !== undefined && ctx.opened >= x0 && ctx.opened <= x1) {
    svg.appendChild(titled(el("line", { class: "opened", x1: sx(ctx.opened), x2: sx(ctx.opened), y1: M.t, y2: H - M.b }),
      `task opened ${timeLabel(ctx.opened)}`));
    svg.appendChild(el("text", { x: sx(ctx.opened) - 3, y: H - M.b - 4, "text-anchor": "end" }, "opened"));
  }
  // gaps in time (missing frames) break the line: absent is not zero
  const gap = medianStep(xs) * 3;
  let d = "";
  pts.forEach(([x, y], i) => {
    const move = i === 0 || x - pts[i - 1][0] > gap;
    d += `${move ? "M" : "L"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
  });
  svg.appendChild(el("path", { class: "line", d }));
  if (pts.length <= 240) {
    for (const [x, y] of pts) {
      svg.appendChild(titled(el("circle", { class: "pt", cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.5 }),
        `${timeLabel(x)}: ${niceNumber(y)} ${series.unit}`));
    }
  }
  for (const ev of ctx.events || []) {
    if (ev.ts < x0 || ev.ts > x1) continue;
    const x = sx(ev.ts);
    const g = titled(el("g", { class: "event" }), `${timeLabel(ev.ts)} ${ev.label}${ev.message ? ": " + ev.message : ""}`);
    g.appendChild(el("line", { class: "ev", x1: x, x2: x, y1: M.t, y2: H - M.b }));
    g.appendChild(el("path", { class: "evmark", d: `M${x - 5},${M.t - 8}L${x + 5},${M.t - 8}L${x},${M.t}Z` }));
    g.appendChild(el("text", { x: x + 6, y: M.t - 1 }, ev.label));
    svg.appendChild(g);
  }
  return svg;
}

function medianStep(xs) {
  if (xs.length < 2) return Infinity;
  const steps = xs.slice(1).map((x, i) => x - xs[i]).sort((a, b) => a - b);
  return steps[Math.floor(steps.length / 2)] || Infinity;
}

// The session's timeline as SVG: one lane per instance (created -> scheduled
// -> running -> its end), the trigger firings as marks on a lane of their own,
// and every idle gap longer than GAP_MS folded into a labelled break, so that a
// session spanning days stays readable.
import { duration, absolute } from "./dom.js";

export const GAP_MS = 5 * 60 * 1000;
const NS = "http://www.w3.org/2000/svg";
const LABEL = 210;
const ROW = 24;
const TOP = 34;
const BREAK = 120;
const MIN_SPAN = 48;
const PAD = 8;
const ENDS = ["finished", "failed", "skipped", "replayed", "abandoned"];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function ms(iso) {
  return iso ? Date.parse(iso) : null;
}

/** The phases of an instance, from its metadata timestamps. */
export function phases(instance, edge) {
  const t = (instance.metadata && instance.metadata.timestamps) || {};
  const created = ms(t.created);
  const scheduled = ms(t.scheduled);
  const running = ms(t.running);
  const status = instance.status.toLowerCase();
  const endKey = ENDS.includes(status) ? status : null;
  const end = endKey ? ms(t[endKey]) || ms(t.lastModified) : null;
  return { created, scheduled, running, end, open: end === null ? edge : null, status };
}

/**
 * The folded time scale over `times` (ms): spans of activity separated by
 * breaks where nothing happened for longer than GAP_MS.
 */
export function scale(times, width) {
  const sorted = [...new Set(times.filter((t) => t !== null && !Number.isNaN(t)))].sort((a, b) => a - b);
  if (!sorted.length) return null;
  const spans = [];
  for (const t of sorted) {
    const last = spans[spans.length - 1];
    if (last && t - last.b <= GAP_MS) last.b = t;
    else spans.push({ a: t, b: t });
  }
  const breaks = spans.length - 1;
  const room = Math.max(width - breaks * BREAK, spans.length * MIN_SPAN);
  const total = spans.reduce((sum, sp) => sum + (sp.b - sp.a), 0);
  const spare = room - spans.length * MIN_SPAN;
  let x = 0;
  for (const sp of spans) {
    sp.x = x;
    sp.w = MIN_SPAN + (total ? (spare * (sp.b - sp.a)) / total : spare / spans.length);
    x += sp.w + BREAK;
  }
  const at = (t) => {
    let sp = spans[0];
    for (const candidate of spans) if (candidate.a <= t) sp = candidate;
    const inner = sp.w - 2 * PAD;
    const f = sp.b > sp.a ? Math.min(1, Math.max(0, (t - sp.a) / (sp.b - sp.a))) : 0.5;
    return sp.x + PAD + f * inner;
  };
  return { spans, at, width: x - BREAK };
}

function clock(t, previous) {
  const iso = new Date(t).toISOString();
  const sameDay = previous !== null && new Date(previous).toISOString().slice(0, 10) === iso.slice(0, 10);
  return sameDay ? iso.slice(11, 19) : `${iso.slice(5, 10)} ${iso.slice(11, 19)}`;
}

/**
 * An SVG of `instances` (with metadata) and `fires` (TriggerFired events);
 * `edge` is where open bars end (the view's last update); `hrefOf(instance)`.
 */
export function renderTimeline(instances, fires, edge, hrefOf, width) {
  const lanes = instances.map((i) => ({ i, p: phases(i, edge) }));
  const times = [];
  for (const { p } of lanes) times.push(p.created, p.scheduled, p.running, p.end, p.open);
  for (const f of fires) times.push(ms(f.at));
  const sc = scale(times, Math.max(width - LABEL - 20, 400));
  if (!sc) return null;
  const height = TOP + (lanes.length + 1) * ROW + 8;
  const svg = s("svg", {
    class: "timeline",
    width: LABEL + sc.width + 20,
    height,
    role: "img",
    "aria-label": `Timeline of ${lanes.length} instances and ${fires.length} firings`,
  });
  svg.append(
    s("defs", {}, s("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, s("rect", { width: 6, height: 6, fill: "#eef0f3" }), s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#d5d9df", "stroke-width": 2 }))),
  );
  const X = (t) => LABEL + sc.at(t);
  // Axis: the time at the start of each span, and the folded breaks between.
  let previous = null;
  sc.spans.forEach((sp, n) => {
    svg.append(s("line", { class: "grid", x1: LABEL + sp.x, x2: LABEL + sp.x, y1: 18, y2: height }));
    svg.append(s("text", { x: LABEL + sp.x + 3, y: 13, fill: "#5f6b7a" }, clock(sp.a, previous), s("title", {}, absolute(new Date(sp.a).toISOString(), true))));
    previous = sp.a;
    const nextSpan = sc.spans[n + 1];
    if (nextSpan) {
      const bx = LABEL + sp.x + sp.w;
      svg.append(
        s(
          "g",
          { class: "break" },
          s("rect", { x: bx + 4, y: 20, width: BREAK - 8, height: height - 24, rx: 4 }),
          s("text", { x: bx + BREAK / 2, y: 32, "text-anchor": "middle" }, `⋯ ${duration(nextSpan.a - sp.b)} ⋯`),
        ),
      );
    }
  });
  // The firings lane.
  const fy = TOP + ROW / 2;
  svg.append(s("text", { x: 8, y: fy + 4, fill: "#5f6b7a" }, "trigger firings"));
  for (const f of fires) {
    const x = X(ms(f.at));
    const link = s("a", { href: `#e${f.seq}`, class: "fire-mark", "data-seq": f.seq });
    link.append(
      s("path", { class: "fire", d: `M${x} ${fy - 7} L${x + 5} ${fy} L${x} ${fy + 7} L${x - 5} ${fy} Z` }),
      s("title", {}, `seq ${f.seq} · ${f.trigger} fired ${absolute(f.at, true)}${f.causedBy ? ` (cascade of seq ${f.causedBy})` : ""}`),
    );
    svg.append(link);
  }
  // One lane per instance.
  lanes.forEach(({ i, p }, n) => {
    const y = TOP + (n + 1) * ROW;
    const mid = y + ROW / 2;
    if (n % 2 === 0) svg.append(s("rect", { x: 0, y, width: LABEL + sc.width + 20, height: ROW, fill: "#f3f5f8", opacity: 0.6 }));
    const label = i.name.length > 27 ? `${i.name.slice(0, 26)}…` : i.name;
    svg.append(s("a", { href: hrefOf(i) }, s("text", { class: "lane-label", x: 8, y: mid + 4 }, label, s("title", {}, `${i.name}: ${p.status}`))));
    const finish = p.end ?? p.open;
    const start = p.created ?? p.scheduled ?? finish;
    if (start === null || finish === null) return;
    const ready = p.scheduled ?? finish;
    const began = p.running ?? (p.scheduled !== null ? finish : null);
    const bar = (a, b, cls, h, extra = {}) => {
      const x1 = X(a);
      const w = Math.max(2, X(b) - x1);
      svg.append(s("rect", { x: x1, y: mid - h / 2, width: w, height: h, rx: 2, class: cls, ...extra }));
    };
    bar(start, ready, "wait", 6);
    if (p.scheduled !== null) bar(p.scheduled, began ?? finish, "s-scheduled", 8, { opacity: 0.55 });
    if (p.running !== null) bar(p.running, finish, `s-${p.end !== null ? p.status : "running"}`, 12);
    else if (p.end !== null) bar(finish, finish, `s-${p.status}`, 12);
    const tip = [`${i.name} (${p.status})`];
    if (p.created !== null) tip.push(`created ${absolute(new Date(p.created).toISOString(), true)}`);
    if (p.running !== null) tip.push(`ran ${duration(finish - p.running)}`);
    svg.lastChild.append(s("title", {}, tip.join("\n")));
  });
  return svg;
}

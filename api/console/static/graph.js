// The workflow graph (steps coloured by live status, a foreach as a group with done/total) and
// the timeline (Gantt) of step attempts, drawn as SVG.
import { el, svg, FINAL } from "./lib.js";

function layout(steps) {
  // Columns by longest path from a root (needs), rows in definition order within a column.
  const level = new Map();
  const byId = new Map(steps.map((s) => [s.id, s]));
  const depth = (id, seen = new Set()) => {
    if (level.has(id)) return level.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const needs = (byId.get(id)?.needs || []).filter((n) => byId.has(n));
    const value = needs.length ? 1 + Math.max(...needs.map((n) => depth(n, seen))) : 0;
    level.set(id, value);
    return value;
  };
  steps.forEach((s) => depth(s.id));
  const rows = new Map();
  const place = new Map();
  for (const s of steps) {
    const column = level.get(s.id);
    const row = rows.get(column) || 0;
    rows.set(column, row + 1);
    place.set(s.id, { x: 20 + column * 190, y: 20 + row * 70 });
  }
  return place;
}

// A step's status and label; a foreach counts its finished items against its item count.
export function stepState(node, steps) {
  const own = steps.find((s) => s.key === node.id);
  const status = own ? own.status : "PENDING";
  if (!node.foreach) return { status, text: status.toLowerCase() };
  const items = steps.filter((s) => s.step_id === node.id && s.index !== null && s.index !== undefined);
  const done = items.filter((s) => FINAL.has(s.status)).length;
  const total = own && own.item_count !== null && own.item_count !== undefined ? own.item_count : null;
  return { status, text: total === null ? status.toLowerCase() : `${done}/${total} done`, done, total };
}

export function graph(definition, steps) {
  const nodes = definition.steps || [];
  const place = layout(nodes);
  const width = Math.max(...[...place.values()].map((p) => p.x), 0) + 190;
  const height = Math.max(...[...place.values()].map((p) => p.y), 0) + 70;
  const drawing = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "Workflow graph" });
  for (const node of nodes) {
    for (const need of node.needs || []) {
      const from = place.get(need);
      const to = place.get(node.id);
      if (from && to) drawing.append(svg("line", { x1: from.x + 150, y1: from.y + 22, x2: to.x, y2: to.y + 22, class: "edge" }));
    }
  }
  for (const node of nodes) {
    const p = place.get(node.id);
    const state = stepState(node, steps);
    const group = Boolean(node.foreach);
    const attrs = { class: `node s-${state.status.toLowerCase()}${group ? " group" : ""}`, "data-step": node.id, "data-status": state.status, transform: `translate(${p.x},${p.y})` };
    if (group && state.total !== undefined && state.total !== null) Object.assign(attrs, { "data-done": state.done, "data-total": state.total });
    drawing.append(
      svg(
        "g",
        attrs,
        svg("title", {}, `${node.id} (${node.type}${group ? ", foreach" : ""}): ${state.text}`),
        group ? svg("rect", { x: 5, y: -5, width: 150, height: 44, rx: 8, class: "stack" }) : null,
        svg("rect", { width: 150, height: 44, rx: 8 }),
        svg("text", { x: 10, y: 18, class: "name" }, node.id),
        svg("text", { x: 10, y: 35, class: "meta" }, `${group ? "foreach " : ""}${node.type} · ${state.text}`),
      ),
    );
  }
  return el("figure", { class: "graph" }, drawing, el("figcaption", { class: "sr-only" }, "Steps coloured by status"));
}

export function timeline(steps) {
  // One bar per step from its start to its end (or now), on the execution's time axis.
  const timed = steps.filter((s) => s.started_at);
  if (!timed.length) return null;
  const start = Math.min(...timed.map((s) => Date.parse(s.started_at)));
  const end = Math.max(...timed.map((s) => (s.finished_at ? Date.parse(s.finished_at) : Date.now())), start + 1);
  const width = 900;
  const scale = (t) => 160 + ((t - start) / (end - start)) * (width - 170);
  const drawing = svg("svg", { viewBox: `0 0 ${width} ${timed.length * 22 + 24}`, width: "100%", role: "img", "aria-label": "Timeline of step attempts" });
  timed.forEach((s, row) => {
    const from = scale(Date.parse(s.started_at));
    const to = scale(s.finished_at ? Date.parse(s.finished_at) : Date.now());
    drawing.append(
      svg("text", { x: 0, y: row * 22 + 15, class: "meta" }, s.key),
      svg("rect", { x: from, y: row * 22 + 4, width: Math.max(to - from, 2), height: 14, rx: 3, class: `bar s-${s.status.toLowerCase()}` }, svg("title", {}, `${s.key}: ${s.status}, attempt ${s.attempt}`)),
    );
  });
  drawing.append(svg("text", { x: 160, y: timed.length * 22 + 18, class: "meta" }, `0 s … ${((end - start) / 1000).toFixed(1)} s`));
  return el("figure", { class: "timeline" }, el("figcaption", {}, "Timeline"), drawing);
}

// The executions page: a live table with filters (status, workflow, version, labels, start
// time range, trigger), counts per status, and bulk cancel / retry for operators.
import { api, badge, can, dataTable, el, fill, notice, session, show, when } from "./lib.js";

export const STATUSES = ["RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"];
const FILTERS = ["workflow", "version", "trigger", "created_after", "created_before"];

// "2026-12-06T21:00:00.000Z" <-> the local "2026-12-06T22:00" of a datetime-local field.
const toLocal = (iso) => {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
};
const toIso = (local) => (local ? new Date(local).toISOString() : "");

// The API query of the filters in the page's address (``status`` and the cursor only where asked).
function query(params, { status = true, cursor = true } = {}) {
  const out = new URLSearchParams();
  for (const name of FILTERS) if (params.get(name)) out.set(name, params.get(name));
  for (const label of params.getAll("label")) if (label) out.append("label", label);
  if (status && params.get("status")) out.set("status", params.get("status"));
  if (cursor && params.get("cursor")) out.set("cursor", params.get("cursor"));
  return out;
}

function filterForm(params) {
  const field = (id, label, attrs) => [el("label", { for: id }, label), el("input", { id, name: id, ...attrs })];
  const status = el("select", { id: "status", name: "status" }, ["", ...STATUSES].map((s) => el("option", { value: s, selected: s === (params.get("status") || "") }, s || "any")));
  const labels = el("div", { class: "labels", id: "label-filters" });
  const addLabel = (value = "") => {
    const n = labels.children.length;
    labels.append(el("input", { class: "label-filter", name: "label", value, placeholder: "key:value", "aria-label": `Label filter ${n + 1} (key:value)`, pattern: "[^:]+:.*" }));
  };
  for (const label of params.getAll("label")) addLabel(label);
  if (!labels.children.length) addLabel();
  const form = el(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter executions" },
    el("div", {}, el("label", { for: "status" }, "Status"), status),
    el("div", {}, ...field("workflow", "Workflow", { value: params.get("workflow") || "", placeholder: "any", size: 14 })),
    el("div", {}, ...field("version", "Version", { type: "number", min: 1, value: params.get("version") || "", placeholder: "any", class: "short" })),
    el("div", {}, el("span", { class: "label-title", id: "labels-title" }, "Labels"), labels, el("button", { type: "button", class: "link", onclick: () => addLabel() }, "+ label")),
    el("div", {}, ...field("created_after", "Started from", { type: "datetime-local", value: toLocal(params.get("created_after")) })),
    el("div", {}, ...field("created_before", "Started before", { type: "datetime-local", value: toLocal(params.get("created_before")) })),
    el("div", {}, ...field("trigger", "Trigger", { value: params.get("trigger") || "", placeholder: "trigger id", size: 14 })),
    el("div", { class: "submit" }, el("button", { type: "submit" }, "Filter"), el("a", { href: "#/executions" }, "Clear")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (status.value) next.set("status", status.value);
    for (const name of ["workflow", "version", "trigger"]) {
      const value = form.querySelector(`#${name}`).value.trim();
      if (value) next.set(name, value);
    }
    for (const name of ["created_after", "created_before"]) {
      const value = toIso(form.querySelector(`#${name}`).value);
      if (value) next.set(name, value);
    }
    for (const input of labels.querySelectorAll("input")) if (input.value.trim()) next.append("label", input.value.trim());
    location.hash = `#/executions?${next}`;
  });
  return form;
}

function countsView(params, counts) {
  const link = (status, text, n) => {
    const next = new URLSearchParams(params);
    next.delete("cursor");
    if (status) next.set("status", status);
    else next.delete("status");
    const current = (params.get("status") || "") === status;
    return el("a", { href: `#/executions?${next}`, class: `count${current ? " current" : ""}`, "aria-current": current ? "true" : null, "data-count": status || "ALL" }, status ? badge(status) : el("span", { class: "badge" }, "ALL"), ` ${n}`);
  };
  return el(
    "nav",
    { class: "counts", "aria-label": "Executions per status" },
    link("", "all", counts.total),
    STATUSES.map((s) => link(s, s, counts.counts[s] || 0)),
  );
}

export function executionsPage(params) {
  const selected = new Set();
  const operator = can("operator");
  const counts = el("div", { id: "counts" });
  const message = el("div", { "aria-live": "polite" });
  const empty = el("div");
  const bulk = el("div", { class: "actions bulk", hidden: !operator });
  const body = el("tbody");
  const pager = el("p", { class: "pager" });
  const all = el("input", { type: "checkbox", id: "select-all", "aria-label": "Select every execution shown" });
  const headers = [operator ? all : null, "Execution", "Workflow", "Status", "Started", "Finished", "Labels"].filter(Boolean);
  const table = dataTable("executions", "Executions, newest first", headers, body);
  // On a phone the filters fold away unless some are set.
  const narrow = window.matchMedia("(max-width: 640px)").matches;
  const filtering = [...query(params, { cursor: false }).keys()].length > 0;
  const filters = el("details", { class: "filter-box", open: !narrow || filtering }, el("summary", {}, "Filters"), filterForm(params));
  show(el("h1", {}, "Executions"), filters, counts, bulk, message, empty, el("div", { class: "scroll" }, table), pager);
  let shown = [];
  let first = true;

  function renderBulk() {
    if (!operator) return;
    const n = selected.size;
    fill(
      bulk,
      el("span", { class: "hint" }, `${n} selected`),
      el("button", { type: "button", "data-bulk": "cancel", disabled: n === 0, onclick: () => act("cancel") }, "Cancel selected"),
      el("button", { type: "button", "data-bulk": "retry", disabled: n === 0, onclick: () => act("retry") }, "Retry selected"),
    );
    all.checked = shown.length > 0 && shown.every((x) => selected.has(x.id));
  }

  async function act(action) {
    const ids = [...selected];
    try {
      const result = await api(`/v1/executions/bulk/${action}`, { method: "POST", body: { ids } });
      const refused = result.results.filter((r) => !r.ok);
      fill(
        message,
        notice(`${action === "cancel" ? "Cancelled" : "Retried"} ${result.succeeded} of ${ids.length}.`, refused.length ? "error" : "info"),
        refused.length ? el("ul", { class: "refused" }, refused.map((r) => el("li", {}, `${r.id.slice(0, 12)}: ${r.problem.detail}`))) : null,
      );
      selected.clear();
      refresh();
      refreshCounts();
    } catch (error) {
      fill(message, notice(error.message));
    }
  }

  all.addEventListener("change", () => {
    for (const x of shown) (all.checked ? selected.add(x.id) : selected.delete(x.id));
    for (const box of body.querySelectorAll("input[type=checkbox]")) box.checked = all.checked;
    renderBulk();
  });

  function row(x) {
    const box = operator
      ? el("input", { type: "checkbox", "data-select": x.id, checked: selected.has(x.id), "aria-label": `Select execution ${x.id.slice(0, 12)}`,
          onchange: (event) => { (event.target.checked ? selected.add(x.id) : selected.delete(x.id)); renderBulk(); } })
      : null;
    return el(
      "tr",
      { "data-id": x.id, "data-status": x.status },
      box ? el("td", {}, box) : null,
      el("td", {}, el("a", { href: `#/executions/${x.id}` }, x.id.slice(0, 12))),
      el("td", {}, `${x.workflow} v${x.version}`),
      el("td", {}, badge(x.status)),
      el("td", {}, when(x.created_at)),
      el("td", {}, when(x.finished_at)),
      el("td", {}, Object.entries(x.labels || {}).map(([k, v]) => el("span", { class: "label" }, `${k}:${v}`))),
    );
  }

  async function refresh() {
    try {
      const list = query(params);
      list.set("limit", "50");
      const page = await api(`/v1/executions?${list}`);
      shown = page.items;
      fill(body, page.items.map(row));
      const here = new URLSearchParams(params);
      const links = [];
      if (params.get("cursor")) { here.delete("cursor"); links.push(el("a", { href: `#/executions?${here}` }, "← Newest")); }
      if (page.next_cursor) { const next = new URLSearchParams(params); next.set("cursor", page.next_cursor); links.push(el("a", { href: `#/executions?${next}`, "data-next": "" }, "Older →")); }
      fill(pager, links.flatMap((l, i) => (i ? [" · ", l] : [l])));
      fill(empty, page.items.length ? null : notice("No executions match.", "info"));
      renderBulk();
      if (first) { first = false; performance.mark("conveyor:executions-rendered"); }
    } catch (error) {
      fill(empty, notice(error.message));
    }
  }

  let firstCounts = true;
  async function refreshCounts() {
    try {
      fill(counts, countsView(params, await api(`/v1/executions/counts?${query(params, { status: false, cursor: false })}`)));
      if (firstCounts) { firstCounts = false; performance.mark("conveyor:counts-rendered"); }
    } catch (error) {
      fill(counts, notice(`Counts: ${error.message}`));
    }
  }

  // The table first, then the counts (on a large store counting takes longer than listing the
  // newest page); each is asked again only after its last answer, so slow answers never pile up.
  let left = false;
  const timers = new Set();
  const again = (work, ms) => {
    const timer = setTimeout(async () => { timers.delete(timer); await work(); if (!left) again(work, ms); }, ms);
    timers.add(timer);
  };
  refresh().then(async () => {
    if (left) return;
    again(refresh, 2000);
    await refreshCounts();
    if (!left) again(refreshCounts, 5000);
  });
  session.leave = () => { left = true; timers.forEach(clearTimeout); };
}

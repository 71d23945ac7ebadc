// Conveyor console: a small single-page app over the public /v1 API (see api/console/__init__.py).
// DOM is built with textContent only (never innerHTML), so API data cannot inject markup.

const KEY = "conveyor.key";
const ROLES = ["viewer", "operator", "editor", "admin"];
const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "SKIPPED"]);
const main = document.getElementById("main");
let me = null; // {tenant, role, subject}
let leave = () => {}; // stops the current page's timers and streams

// ------------------------------------------------------------------------------ plumbing

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401 && me !== null) signOut("Your key was refused (expired or revoked?). Sign in again.");
    throw new ApiError(response.status, data);
  }
  return data;
}

const can = (role) => me !== null && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const badge = (status) => el("span", { class: `badge s-${String(status).toLowerCase()}` }, status);

// A table with a caption for screen readers, column headers and rows.
function dataTable(id, caption, headers, rows) {
  return el(
    "table",
    { id },
    el("caption", { class: "sr-only" }, caption),
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    rows instanceof Node ? rows : el("tbody", {}, rows),
  );
}

// replaceChildren, leaving out the null/false of optional parts (the DOM would print "null").
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

function show(...nodes) {
  leave();
  leave = () => {};
  main.replaceChildren(...nodes);
  main.focus();
}

function notice(text, kind = "error") {
  return el("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// ------------------------------------------------------------------------------ session

function signOut(message) {
  sessionStorage.removeItem(KEY);
  me = null;
  renderWho();
  signIn(message);
}

function renderWho() {
  document.getElementById("who").textContent = me ? `${me.tenant} · ${me.role}` : "";
  document.getElementById("sign-out").hidden = me === null;
  for (const link of document.querySelectorAll("[data-needs]")) link.hidden = !can(link.dataset.needs);
}

function signIn(message) {
  const field = el("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true });
  const form = el(
    "form",
    { class: "card narrow", "aria-labelledby": "sign-in-title" },
    el("h1", { id: "sign-in-title" }, "Sign in"),
    message ? notice(message) : null,
    el("label", { for: "key" }, "API key"),
    field,
    el("p", { class: "hint" }, "Create one with ", el("code", {}, "conveyor keys create"), ". It stays in this tab only."),
    el("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, field.value.trim());
    try {
      me = await api("/v1/whoami");
    } catch (error) {
      sessionStorage.removeItem(KEY);
      signIn(error.message);
      return;
    }
    renderWho();
    location.hash = "#/executions";
    route();
  });
  show(form);
  field.focus();
  return form;
}

// ------------------------------------------------------------------------------ executions

const STATUSES = ["", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"];

function executionsPage(params) {
  const status = el("select", { id: "status", name: "status" }, STATUSES.map((s) => el("option", { value: s, selected: s === (params.get("status") || "") }, s || "any")));
  const workflow = el("input", { id: "workflow", name: "workflow", value: params.get("workflow") || "", placeholder: "any" });
  const filters = el(
    "form",
    { class: "filters", role: "search" },
    el("label", { for: "status" }, "Status"), status,
    el("label", { for: "workflow" }, "Workflow"), workflow,
    el("button", { type: "submit" }, "Filter"),
  );
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (status.value) query.set("status", status.value);
    if (workflow.value.trim()) query.set("workflow", workflow.value.trim());
    location.hash = `#/executions?${query}`;
  });
  const body = el("tbody");
  const message = el("div");
  const table = dataTable("executions", "Executions, newest first", ["Execution", "Workflow", "Status", "Started", "Finished", "Labels"], body);
  show(el("h1", {}, "Executions"), filters, message, el("div", { class: "scroll" }, table));

  async function refresh() {
    const query = new URLSearchParams({ limit: "50" });
    for (const name of ["status", "workflow"]) if (params.get(name)) query.set(name, params.get(name));
    try {
      const page = await api(`/v1/executions?${query}`);
      fill(body, 
        ...page.items.map((x) =>
          el(
            "tr",
            { "data-id": x.id, "data-status": x.status },
            el("td", {}, el("a", { href: `#/executions/${x.id}` }, x.id.slice(0, 12))),
            el("td", {}, `${x.workflow} v${x.version}`),
            el("td", {}, badge(x.status)),
            el("td", {}, when(x.created_at)),
            el("td", {}, when(x.finished_at)),
            el("td", {}, Object.entries(x.labels || {}).map(([k, v]) => el("span", { class: "label" }, `${k}:${v}`))),
          ),
        ),
      );
      fill(message, page.items.length ? "" : notice("No executions yet.", "info"));
    } catch (error) {
      fill(message, notice(error.message));
    }
  }
  refresh();
  const timer = setInterval(refresh, 2000);
  leave = () => clearInterval(timer);
}

// ------------------------------------------------------------------------------ one execution

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

function stepState(id, steps) {
  const own = steps.find((s) => s.key === id);
  const items = steps.filter((s) => s.step_id === id && s.index !== null && s.index !== undefined);
  if (!items.length) return { status: own ? own.status : "PENDING", text: own ? own.status : "pending" };
  const done = items.filter((s) => FINAL.has(s.status)).length;
  const total = (own && Array.isArray(own.items) && own.items.length) || items.length;
  return { status: own ? own.status : "RUNNING", text: `${done}/${total} done` };
}

function graph(definition, steps) {
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
    const state = stepState(node.id, steps);
    drawing.append(
      svg(
        "g",
        { class: `node s-${state.status.toLowerCase()}`, "data-step": node.id, "data-status": state.status, transform: `translate(${p.x},${p.y})` },
        svg("title", {}, `${node.id} (${node.type}): ${state.text}`),
        svg("rect", { width: 150, height: 44, rx: 8 }),
        svg("text", { x: 10, y: 18, class: "name" }, node.id),
        svg("text", { x: 10, y: 35, class: "meta" }, `${node.type} · ${state.text}`),
      ),
    );
  }
  return el("figure", { class: "graph" }, drawing, el("figcaption", { class: "sr-only" }, "Steps coloured by status"));
}

// What the user typed into a step's comment or payload field survives the live re-renders.
const drafts = new Map();

function draftInput(key, attrs) {
  const input = el("input", { ...attrs, value: drafts.get(key) || "" });
  input.addEventListener("input", () => drafts.set(key, input.value));
  return input;
}

function stepActions(step, definition, act) {
  if (step.status !== "WAITING" || !can("operator")) return "";
  const type = (definition.steps || []).find((s) => s.id === step.step_id)?.type;
  if (type === "approval") {
    const comment = draftInput(`comment:${step.key}`, { class: "comment", "aria-label": `Comment on ${step.key}`, placeholder: "comment" });
    const decide = (decision) => act(`steps/${encodeURIComponent(step.key)}/approval`, { decision, comment: comment.value || null });
    return el(
      "div",
      { class: "step-actions" },
      comment,
      el("button", { type: "button", "data-approve": step.key, onclick: () => decide("approve") }, "Approve"),
      el("button", { type: "button", "data-reject": step.key, onclick: () => decide("reject") }, "Reject"),
    );
  }
  const payload = draftInput(`payload:${step.key}`, { class: "comment", "aria-label": `Signal payload for ${step.key} (JSON)`, placeholder: "payload (JSON)" });
  const send = () => {
    let value = null;
    try {
      value = payload.value ? JSON.parse(payload.value) : null;
    } catch (error) {
      payload.setCustomValidity("not JSON");
      payload.reportValidity();
      return;
    }
    act("signal", { step: step.key, payload: value });
  };
  return el("div", { class: "step-actions" }, payload, el("button", { type: "button", "data-signal": step.key, onclick: send }, "Signal"));
}

function timeline(steps) {
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

function stepsTable(steps, definition, act) {
  return dataTable(
    "steps",
    "Steps and their attempts",
    ["Step", "Status", "Attempt", "Started", "Finished", "Error", ""],
      steps.map((s) =>
        el(
          "tr",
          { "data-step": s.key, "data-status": s.status },
          el("td", {}, s.key),
          el("td", {}, badge(s.status)),
          el("td", {}, s.attempt),
          el("td", {}, when(s.started_at)),
          el("td", {}, when(s.finished_at)),
          el("td", {}, s.error ? errorView(s.error) : ""),
          el("td", {}, stepActions(s, definition, act)),
        ),
      ),
  );
}

function errorView(error) {
  const summary = `${error.type || "Error"}: ${error.message || ""}`;
  if (!error.traceback) return el("span", { class: "error" }, summary);
  return el("details", { class: "error" }, el("summary", {}, summary), el("pre", {}, error.traceback));
}

function executionPage(id) {
  const header = el("div");
  const message = el("div");
  const picture = el("div");
  const table = el("div", { class: "scroll" });
  const output = el("div");
  show(header, message, picture, table, output);
  let definition = null;
  let closed = false;
  let pending = null;

  async function act(action, body) {
    try {
      await api(`/v1/executions/${id}/${action}`, { method: "POST", body });
      fill(message, notice(`${action.split("/").pop()} requested`, "info"));
      refresh();
    } catch (error) {
      fill(message, notice(error.message));
    }
  }

  async function refresh() {
    try {
      const [execution, detail] = await Promise.all([api(`/v1/executions/${id}`), api(`/v1/executions/${id}/steps`)]);
      const steps = detail.steps || detail.items || detail;
      if (definition === null) {
        definition = (await api(`/v1/workflows/${execution.workflow}/versions/${execution.version}`)).definition;
      }
      const actions = [];
      if (can("operator")) {
        if (execution.status === "RUNNING") actions.push(["pause", "Pause"], ["cancel", "Cancel"]);
        if (execution.status === "PAUSED") actions.push(["resume", "Resume"], ["cancel", "Cancel"]);
        if (["FAILED", "CANCELLED", "TIMED_OUT"].includes(execution.status)) actions.push(["retry", "Retry"]);
      }
      fill(header, 
        el("h1", {}, `${execution.workflow} v${execution.version} `, badge(execution.status)),
        el("p", { class: "hint" }, `Execution ${execution.id} · started ${when(execution.created_at)}${execution.finished_at ? ` · finished ${when(execution.finished_at)}` : ""}`),
        el("div", { class: "actions" }, actions.map(([action, label]) => el("button", { type: "button", "data-action": action, onclick: () => act(action) }, label))),
        execution.error ? errorView(execution.error) : null,
      );
      fill(picture, graph(definition, steps));
      fill(table, stepsTable(steps, definition, act), timeline(steps));
      fill(output, 
        el("h2", {}, "Input"), el("pre", {}, JSON.stringify(execution.input, null, 2)),
        execution.output !== null && execution.output !== undefined ? el("h2", {}, "Output") : null,
        execution.output !== null && execution.output !== undefined ? el("pre", { id: "output" }, JSON.stringify(execution.output, null, 2)) : null,
      );
    } catch (error) {
      fill(message, notice(error.message));
    }
  }

  function soon() {
    if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 150);
  }

  function follow() {
    // The API's live stream (a snapshot, then every event); each one means "look again".
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/v1/executions/${id}/events`, ["conveyor.v1", `bearer.${sessionStorage.getItem(KEY)}`]);
    socket.addEventListener("message", soon);
    socket.addEventListener("close", () => { if (!closed) setTimeout(follow, 2000); });
    leave = () => { closed = true; clearTimeout(pending); socket.close(); };
  }

  refresh();
  follow();
}

// ------------------------------------------------------------------------------ workflows

async function workflowsPage(name) {
  const message = el("div");
  const list = el("div", { class: "scroll" });
  const detail = el("div");
  show(el("h1", {}, "Workflows"), message, list, detail);
  try {
    const page = await api("/v1/workflows?limit=200");
    fill(
      list,
      dataTable(
        "workflows",
        "Workflows, latest version of each",
        ["Workflow", "Latest", "Created", "Archived"],
          page.items.map((w) =>
            el(
              "tr",
              { "data-workflow": w.name },
              el("td", {}, el("a", { href: `#/workflows/${encodeURIComponent(w.name)}` }, w.name)),
              el("td", {}, `v${w.version}`),
              el("td", {}, when(w.created_at)),
              el("td", {}, w.archived ? "yes" : ""),
            ),
          ),
      ),
    );
    if (!name) return;
    const versions = await api(`/v1/workflows/${encodeURIComponent(name)}/versions?limit=50`);
    const latest = await api(`/v1/workflows/${encodeURIComponent(name)}`);
    fill(
      detail,
      el("h2", {}, `${latest.name} v${latest.version}`),
      can("operator") ? el("p", {}, el("a", { href: `#/start?workflow=${encodeURIComponent(name)}` }, "Start an execution")) : null,
      graph(latest.definition, []),
      el("h3", {}, "Versions"),
      el("ul", { id: "versions" }, versions.items.map((v) => el("li", {}, `v${v.version} · ${when(v.created_at)} · ${v.digest.slice(0, 12)}`))),
      el("h3", {}, "Definition"),
      el("pre", {}, JSON.stringify(latest.definition, null, 2)),
    );
  } catch (error) {
    fill(message, notice(error.message));
  }
}

// ------------------------------------------------------------------------------ triggers

async function triggersPage() {
  const message = el("div");
  const list = el("div", { class: "scroll" });
  show(el("h1", {}, "Triggers"), message, list);
  try {
    const page = await api("/v1/triggers?limit=200");
    fill(
      list,
      dataTable(
        "triggers",
        "Schedule and event triggers",
        ["Trigger", "Workflow", "Kind", "Spec", "Enabled", "Next fires", "Fired / missed / skipped / buffered", "Last error"],
          page.items.map((t) =>
            el(
              "tr",
              { "data-trigger": t.id },
              el("td", {}, t.id.slice(0, 12)),
              el("td", {}, t.workflow),
              el("td", {}, t.kind),
              el("td", {}, el("code", {}, JSON.stringify(t.spec))),
              el("td", {}, t.enabled ? "yes" : "no"),
              el("td", {}, el("ul", { class: "plain" }, (t.next_fires || []).map((f) => el("li", {}, when(f.at), f.note ? el("span", { class: "hint" }, ` (${f.note})`) : null)))),
              el("td", {}, `${t.fired} / ${t.missed} / ${t.skipped} / ${t.buffered}`),
              el("td", {}, t.last_error ? el("span", { class: "error" }, t.last_error) : ""),
            ),
          ),
      ),
    );
    if (!page.items.length) fill(message, notice("No triggers yet.", "info"));
  } catch (error) {
    fill(message, notice(error.message));
  }
}

// ------------------------------------------------------------------------------ start

async function startPage(params) {
  const message = el("div");
  const workflow = el("select", { id: "start-workflow", name: "workflow", required: true });
  const input = el("textarea", { id: "start-input", name: "input", rows: 8, spellcheck: "false" }, "{}");
  const form = el(
    "form",
    { class: "card", "aria-labelledby": "start-title" },
    el("h1", { id: "start-title" }, "Start an execution"),
    message,
    el("label", { for: "start-workflow" }, "Workflow"), workflow,
    el("label", { for: "start-input" }, "Input (JSON, checked against the workflow's input schema)"), input,
    el("button", { type: "submit" }, "Start"),
  );
  show(form);
  try {
    const page = await api("/v1/workflows?limit=200");
    const chosen = params.get("workflow");
    fill(workflow, page.items.filter((w) => !w.archived).map((w) => el("option", { value: w.name, selected: w.name === chosen }, `${w.name} (v${w.version})`)));
  } catch (error) {
    fill(message, notice(error.message));
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let payload;
    try {
      payload = JSON.parse(input.value || "{}");
    } catch (error) {
      fill(message, notice(`The input is not JSON: ${error.message}`));
      return;
    }
    try {
      const execution = await api("/v1/executions", { method: "POST", body: { workflow: workflow.value, input: payload } });
      location.hash = `#/executions/${execution.id}`;
    } catch (error) {
      const problems = (error.problem && error.problem.errors) || [];
      fill(message, notice(error.message), problems.length ? el("ul", {}, problems.map((p) => el("li", {}, `${p.path || ""} ${p.message || p.detail || ""}`))) : null);
    }
  });
}

// ------------------------------------------------------------------------------ routing

async function route() {
  if (!sessionStorage.getItem(KEY)) return signIn();
  if (me === null) {
    try {
      me = await api("/v1/whoami");
    } catch (error) {
      return signIn(error.message);
    }
    renderWho();
  }
  const [path, query] = (location.hash.slice(1) || "/executions").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "executions" && parts[1]) return executionPage(decodeURIComponent(parts[1]));
  if (parts[0] === "start" && can("operator")) return startPage(params);
  if (parts[0] === "workflows") return workflowsPage(parts[1] ? decodeURIComponent(parts[1]) : null);
  if (parts[0] === "triggers") return triggersPage();
  return executionsPage(params);
}

document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", route);
route();

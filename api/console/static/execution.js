// One execution: the live graph, steps with their actions, the timeline, a live logs panel per
// step, errors (tracebacks only reach operators: the API strips them for viewers) and the
// execution's actions. The live view is one GraphQL read without payloads; inputs and outputs
// are fetched when asked for.
import { FINAL, KEY, api, badge, can, dataTable, el, fill, graphql, notice, payload, session, show, when } from "./lib.js";
import { graph, timeline } from "./graph.js";

const VIEW = `query ($id: ID!) { execution(id: $id) { id workflow version status run error createdAt finishedAt expiresAt labels
  steps { key stepId status attempt run index itemCount error wait startedAt finishedAt } } }`;

const snake = (s) => ({ key: s.key, step_id: s.stepId, status: s.status, attempt: s.attempt, run: s.run, index: s.index, item_count: s.itemCount, error: s.error, wait: s.wait, started_at: s.startedAt, finished_at: s.finishedAt });

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
  const value = draftInput(`payload:${step.key}`, { class: "comment", "aria-label": `Signal payload for ${step.key} (JSON)`, placeholder: "payload (JSON)" });
  const send = () => {
    let parsed = null;
    try {
      parsed = value.value ? JSON.parse(value.value) : null;
    } catch (error) {
      value.setCustomValidity("not JSON");
      value.reportValidity();
      return;
    }
    act("signal", { step: step.key, payload: parsed });
  };
  return el("div", { class: "step-actions" }, value, el("button", { type: "button", "data-signal": step.key, onclick: send }, "Signal"));
}

export function errorView(error) {
  const summary = `${error.type || "Error"}: ${error.message || ""}`;
  if (!error.traceback) return el("span", { class: "error" }, summary);
  return el("details", { class: "error" }, el("summary", {}, summary), el("pre", { class: "traceback" }, error.traceback));
}

function stepsTable(steps, definition, act, openLogs, openOutput) {
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
        el("td", {}, s.run > 1 ? `${s.attempt} (run ${s.run})` : s.attempt),
        el("td", {}, when(s.started_at)),
        el("td", {}, when(s.finished_at)),
        el("td", {}, s.error ? errorView(s.error) : ""),
        el(
          "td",
          {},
          el("div", { class: "row-actions" },
          el("button", { type: "button", class: "small", "data-logs": s.key, onclick: () => openLogs(s.key), "aria-controls": "logs" }, "Logs"),
          s.status === "SUCCEEDED" ? el("button", { type: "button", class: "small", "data-output": s.key, onclick: () => openOutput(s.key) }, "Output") : null,
          stepActions(s, definition, act)),
        ),
      ),
    ),
  );
}

// The logs of one step: the stored lines of ended attempts from the API, and the lines of a
// running attempt as they arrive live (``step.log`` events); merged by (run, attempt, seq).
function logsPanel(executionId) {
  const section = el("section", { id: "logs", class: "logs", "aria-labelledby": "logs-title", hidden: true });
  let key = null;
  let lines = new Map(); // "run:attempt:seq" -> {run, attempt, line}
  let stored = new Set(); // "run:attempt" of the attempts whose stored lines were read
  let list = null;
  let summary = null;
  let errorBox = null;
  let retries = [];
  let waiting = null; // the "run:attempt" whose stored lines are being waited for
  const order = (a, b) => a.run - b.run || a.attempt - b.attempt || a.line.seq - b.line.seq;
  const render = ({ run, attempt, line: l }) =>
    el("li", { class: `log level-${String(l.level).toLowerCase()}`, "data-seq": l.seq, "data-attempt": `${run}.${attempt}` },
      el("time", { datetime: l.at }, new Date(l.at).toLocaleTimeString()), " ",
      el("span", { class: "level" }, l.level), " ",
      el("span", { class: "logger" }, l.logger), " ",
      el("span", { class: "message" }, l.message));
  function add(run, attempt, found, { sorted = false } = {}) {
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    let added = false;
    for (const l of found) {
      const id = `${run}:${attempt}:${l.seq}`;
      if (lines.has(id)) continue;
      lines.set(id, { run, attempt, line: l });
      if (!sorted) list.append(render(lines.get(id)));
      added = true;
    }
    if (sorted && added) list.replaceChildren(...[...lines.values()].sort(order).map(render));
    if (added) section.querySelector(".empty")?.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }
  async function load(stepKey) {
    let cursor = null;
    const attempts = [];
    for (let page = 0; page < 10; page += 1) {
      const query = new URLSearchParams({ limit: "1000" });
      if (cursor) query.set("cursor", cursor);
      const found = await api(`/v1/executions/${executionId}/steps/${encodeURIComponent(stepKey)}/logs?${query}`);
      if (key !== stepKey) return;
      for (const item of found.items) add(item.run, item.attempt, [item], { sorted: true });
      attempts.push(...found.attempts);
      cursor = found.next_cursor;
      if (!cursor) break;
    }
    for (const a of attempts) stored.add(`${a.run}:${a.attempt}`);
    fill(summary, attempts.map((a) => el("li", { "data-run": a.run, "data-attempt": a.attempt },
      `Run ${a.run}, attempt ${a.attempt}: ${a.lines} lines`, a.dropped ? el("strong", { class: "dropped" }, ` · ${a.dropped} more dropped (over the bound)`) : null)));
  }
  async function open(stepKey, step) {
    close();
    key = stepKey;
    list = el("ol", { id: "log-lines", class: "log-lines", tabindex: 0, "aria-label": `Log lines of ${stepKey}` });
    summary = el("ul", { class: "plain attempts" });
    errorBox = el("div", { class: "log-error" }, step && step.error ? errorView(step.error) : null);
    section.hidden = false;
    fill(
      section,
      el("div", { class: "logs-head" }, el("h2", { id: "logs-title" }, `Logs · ${stepKey}`),
        el("button", { type: "button", class: "small", "data-close-logs": "", onclick: close }, "Close")),
      errorBox, summary, el("p", { class: "hint empty" }, "No lines yet (the lines of a running attempt arrive live)."), list,
    );
    section.scrollIntoView({ block: "nearest" });
    try {
      await load(stepKey);
    } catch (error) {
      summary.append(el("li", {}, notice(`Logs: ${error.message}`)));
    }
  }
  function close() {
    key = null;
    lines = new Map();
    stored = new Set();
    retries.forEach(clearTimeout);
    retries = [];
    waiting = null;
    section.hidden = true;
    section.replaceChildren();
  }
  return {
    section,
    open,
    close,
    get key() { return key; },
    live(event) {
      if (key === null || event.step_key !== key || !event.data) return;
      add(event.data.run || 1, event.attempt, event.data.lines || []);
    },
    // The open step as the page last read it: its error, and once an attempt ended, its stored
    // lines (written shortly after the outcome, so asked for again a few times until there).
    update(step) {
      if (key === null || !step || step.key !== key) return;
      fill(errorBox, step.error ? errorView(step.error) : null);
      const ended = !["RUNNING", "QUEUED", "PENDING"].includes(step.status) && step.attempt > 0;
      const which = `${step.run}:${step.attempt}`;
      if (!ended || stored.has(which) || waiting === which) return;
      waiting = which;
      const stepKey = key;
      retries.forEach(clearTimeout);
      retries = [300, 1000, 2500, 5000].map((ms) => setTimeout(() => {
        if (key === stepKey && !stored.has(`${step.run}:${step.attempt}`)) load(stepKey).catch(() => {});
      }, ms));
    },
  };
}

// When the reconciler deletes a finished execution (its retention); nothing while it is active.
function retention(execution) {
  if (!FINAL.has(execution.status)) return null;
  return el("span", { "data-expires": execution.expiresAt || "never" },
    execution.expiresAt ? ` · deleted after ${when(execution.expiresAt)}` : " · kept forever");
}

// Delete for a finished execution (operators): a confirm step first, since it cannot be undone;
// deleted, the page goes back to the list; a refusal shows the API's problem like other actions.
function deleteControl(id, message) {
  const box = el("span", { class: "delete" });
  const ask = () => fill(box,
    el("span", {}, "Delete this execution and its steps for good? "),
    el("button", { type: "button", class: "danger", "data-confirm-delete": "", onclick: remove }, "Delete permanently"),
    el("button", { type: "button", class: "secondary", "data-keep": "", onclick: reset }, "Keep"));
  const reset = () => fill(box, el("button", { type: "button", class: "secondary", "data-action": "delete", onclick: ask }, "Delete"));
  async function remove() {
    try {
      await api(`/v1/executions/${id}`, { method: "DELETE" });
      location.hash = "#/executions";
    } catch (error) {
      reset();
      fill(message, notice(error.message));
    }
  }
  return reset();
}

export function executionPage(id) {
  const header = el("div");
  const message = el("div", { "aria-live": "polite" });
  const picture = el("div");
  const table = el("div", { class: "scroll" });
  const logs = logsPanel(id);
  const output = el("div", { id: "payloads" });
  show(header, message, picture, table, logs.section, output);
  let definition = null;
  let steps = [];
  let closed = false;
  let pending = null;
  let deletion = null; // the Delete control, kept across live re-renders (its confirm step too)

  async function act(action, body) {
    try {
      await api(`/v1/executions/${id}/${action}`, { method: "POST", body });
      fill(message, notice(`${action.split("/").pop()} requested`, "info"));
      refresh();
    } catch (error) {
      fill(message, notice(error.message));
    }
  }

  async function openOutput(key) {
    try {
      const data = await graphql("query ($id: ID!) { execution(id: $id) { steps { key output } } }", { id });
      const step = data.execution.steps.find((s) => s.key === key);
      fill(output, el("h2", {}, `Output of ${key}`), payload(step ? step.output : null, "step-output"));
      output.scrollIntoView({ block: "nearest" });
    } catch (error) {
      fill(message, notice(error.message));
    }
  }

  async function openPayload(which) {
    try {
      const data = await graphql(`query ($id: ID!) { execution(id: $id) { ${which} } }`, { id });
      fill(output, el("h2", {}, which === "input" ? "Input" : "Output"), payload(data.execution[which], which));
    } catch (error) {
      fill(message, notice(error.message));
    }
  }

  async function refresh() {
    try {
      const data = await graphql(VIEW, { id });
      const execution = data.execution;
      if (execution === null) {
        fill(header, el("h1", {}, "Execution"));
        fill(message, notice(`Execution ${id} not found.`));
        return;
      }
      steps = execution.steps.map(snake);
      if (definition === null) {
        definition = (await api(`/v1/workflows/${execution.workflow}/versions/${execution.version}`)).definition;
      }
      const actions = [];
      if (can("operator")) {
        if (execution.status === "RUNNING") actions.push(["pause", "Pause"], ["cancel", "Cancel"]);
        if (execution.status === "PAUSED") actions.push(["resume", "Resume"], ["cancel", "Cancel"]);
        if (["FAILED", "TIMED_OUT"].includes(execution.status)) actions.push(["retry", "Retry"]);
      }
      fill(
        header,
        el("h1", {}, `${execution.workflow} v${execution.version} `, badge(execution.status)),
        el("p", { class: "hint" }, `Execution ${execution.id} · run ${execution.run} · started ${when(execution.createdAt)}${execution.finishedAt ? ` · finished ${when(execution.finishedAt)}` : ""}`,
          retention(execution), " ", Object.entries(execution.labels || {}).map(([k, v]) => el("span", { class: "label" }, `${k}:${v}`))),
        el("div", { class: "actions" },
          actions.map(([action, label]) => el("button", { type: "button", "data-action": action, onclick: () => act(action) }, label)),
          el("button", { type: "button", class: "secondary", "data-payload": "input", onclick: () => openPayload("input") }, "Input"),
          execution.status === "SUCCEEDED" ? el("button", { type: "button", class: "secondary", "data-payload": "output", onclick: () => openPayload("output") }, "Output") : null,
          FINAL.has(execution.status) && can("operator") ? (deletion ||= deleteControl(id, message)) : null),
        execution.error ? errorView(execution.error) : null,
      );
      fill(picture, graph(definition, steps));
      fill(table, stepsTable(steps, definition, act, (key) => logs.open(key, steps.find((s) => s.key === key)), openOutput), timeline(steps));
      logs.update(steps.find((s) => s.key === logs.key));
    } catch (error) {
      fill(message, notice(error.message));
    }
  }

  function soon() {
    if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 150);
  }

  // The stream refused us: credentials refused sign the tab out with the API's reason; a
  // forbidden or unknown execution stops following with that reason; anything else (a slow
  // consumer) reconnects when the socket closes.
  function streamRefused(problem) {
    const reason = problem.detail || problem.title || "the live stream was refused";
    if (problem.status === 401) {
      closed = true;
      return session.onUnauthorized(reason);
    }
    if (problem.status === 403 || problem.status === 404) {
      closed = true;
      fill(message, notice(`Live updates stopped: ${reason}`));
    }
  }

  let cursor = null; // the last position seen in the execution's live log
  function follow() {
    // The API's live stream (a snapshot, then every event): step.log lines go to the logs
    // panel; anything else means "look again". A dropped stream is reopened after the last
    // cursor seen, so the API replays what was missed (or sends a fresh snapshot).
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const after = cursor === null ? "" : `?after=${encodeURIComponent(cursor)}`;
    const socket = new WebSocket(`${scheme}://${location.host}/v1/executions/${id}/events${after}`, ["conveyor.v1", `bearer.${sessionStorage.getItem(KEY)}`]);
    socket.addEventListener("message", (message) => {
      let data = null;
      try { data = JSON.parse(message.data); } catch (error) { return; }
      if (typeof data.cursor === "string") cursor = data.cursor;
      if (data.type === "heartbeat") return;
      if (data.type === "event" && data.event && data.event.type === "step.log") return logs.live(data.event);
      if (data.type === "error") return streamRefused(data.problem || {});
      soon();
    });
    socket.addEventListener("close", () => { if (!closed) setTimeout(follow, 2000); });
    session.leave = () => { closed = true; clearTimeout(pending); logs.close(); socket.close(); };
  }

  refresh();
  follow();
}

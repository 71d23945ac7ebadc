// One execution: the live graph, steps with their actions, the timeline, a live logs panel per
// step, errors (tracebacks only reach operators: the API strips them for viewers) and the
// execution's actions. The live view is one GraphQL read without payloads; inputs and outputs
// are fetched when asked for.
import { KEY, api, badge, can, dataTable, el, fill, graphql, notice, payload, session, show, when } from "./lib.js";
import { graph, timeline } from "./graph.js";

const VIEW = `query ($id: ID!) { execution(id: $id) { id workflow version status run error createdAt finishedAt labels
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
          { class: "row-actions" },
          el("button", { type: "button", class: "small", "data-logs": s.key, onclick: () => openLogs(s.key), "aria-controls": "logs" }, "Logs"),
          s.status === "SUCCEEDED" ? el("button", { type: "button", class: "small", "data-output": s.key, onclick: () => openOutput(s.key) }, "Output") : null,
          stepActions(s, definition, act),
        ),
      ),
    ),
  );
}

// The logs of one step: stored lines from the API, then live ``step.log`` events appended.
function logsPanel(executionId) {
  const section = el("section", { id: "logs", class: "logs", "aria-label": "Step logs", hidden: true });
  let key = null;
  let seen = new Set();
  let list = null;
  let summary = null;
  let errorBox = null;
  const line = (run, attempt, l) =>
    el("li", { class: `log level-${String(l.level).toLowerCase()}`, "data-seq": l.seq, "data-attempt": `${run}.${attempt}` },
      el("time", { datetime: l.at }, new Date(l.at).toLocaleTimeString()), " ",
      el("span", { class: "level" }, l.level), " ",
      el("span", { class: "logger" }, l.logger), " ",
      el("span", { class: "message" }, l.message));
  function add(run, attempt, lines) {
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    for (const l of lines) {
      const id = `${run}:${attempt}:${l.seq}`;
      if (seen.has(id)) continue;
      seen.add(id);
      list.append(line(run, attempt, l));
    }
    if (atBottom) list.scrollTop = list.scrollHeight;
    section.querySelector(".empty")?.remove();
  }
  async function open(stepKey, step) {
    key = stepKey;
    seen = new Set();
    list = el("ol", { id: "log-lines", class: "log-lines", tabindex: 0, "aria-label": `Log lines of ${stepKey}` });
    summary = el("ul", { class: "plain attempts" });
    errorBox = el("div", { class: "log-error" }, step && step.error ? errorView(step.error) : null);
    section.hidden = false;
    fill(
      section,
      el("div", { class: "logs-head" }, el("h2", { id: "logs-title" }, `Logs · ${stepKey}`),
        el("button", { type: "button", class: "small", "data-close-logs": "", onclick: close }, "Close")),
      errorBox, summary, el("p", { class: "hint empty" }, "No lines yet (lines of a running attempt arrive live)."), list,
    );
    section.scrollIntoView({ block: "nearest" });
    try {
      let cursor = null;
      const attempts = [];
      for (let page = 0; page < 10; page += 1) {
        const query = new URLSearchParams({ limit: "1000" });
        if (cursor) query.set("cursor", cursor);
        const found = await api(`/v1/executions/${executionId}/steps/${encodeURIComponent(stepKey)}/logs?${query}`);
        if (key !== stepKey) return;
        for (const item of found.items) add(item.run, item.attempt, [item]);
        attempts.push(...found.attempts);
        cursor = found.next_cursor;
        if (!cursor) break;
      }
      fill(summary, attempts.map((a) => el("li", { "data-run": a.run, "data-attempt": a.attempt },
        `Run ${a.run}, attempt ${a.attempt}: ${a.lines} lines`, a.dropped ? el("strong", { class: "dropped" }, ` · ${a.dropped} dropped (over the bound)`) : null)));
    } catch (error) {
      summary.append(el("li", {}, notice(`Logs: ${error.message}`)));
    }
  }
  function close() {
    key = null;
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
    error(step) { if (key !== null && step && errorBox) fill(errorBox, step.error ? errorView(step.error) : null); },
  };
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
          Object.entries(execution.labels || {}).map(([k, v]) => el("span", { class: "label" }, `${k}:${v}`))),
        el("div", { class: "actions" },
          actions.map(([action, label]) => el("button", { type: "button", "data-action": action, onclick: () => act(action) }, label)),
          el("button", { type: "button", class: "secondary", "data-payload": "input", onclick: () => openPayload("input") }, "Input"),
          execution.status === "SUCCEEDED" ? el("button", { type: "button", class: "secondary", "data-payload": "output", onclick: () => openPayload("output") }, "Output") : null),
        execution.error ? errorView(execution.error) : null,
      );
      fill(picture, graph(definition, steps));
      fill(table, stepsTable(steps, definition, act, (key) => logs.open(key, steps.find((s) => s.key === key)), openOutput), timeline(steps));
      logs.error(steps.find((s) => s.key === logs.key));
    } catch (error) {
      fill(message, notice(error.message));
    }
  }

  function soon() {
    if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 150);
  }

  function follow() {
    // The API's live stream (a snapshot, then every event): step.log lines go to the logs
    // panel; anything else means "look again".
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/v1/executions/${id}/events`, ["conveyor.v1", `bearer.${sessionStorage.getItem(KEY)}`]);
    socket.addEventListener("message", (message) => {
      let data = null;
      try { data = JSON.parse(message.data); } catch (error) { return; }
      if (data.type === "heartbeat") return;
      if (data.type === "event" && data.event && data.event.type === "step.log") return logs.live(data.event);
      soon();
    });
    socket.addEventListener("close", () => { if (!closed) setTimeout(follow, 2000); });
    session.leave = () => { closed = true; clearTimeout(pending); socket.close(); };
  }

  refresh();
  follow();
}

// Workflows: the latest version of each, one workflow's graph and versions with a line diff
// between any two of them, and the form that starts an execution.
import { api, can, dataTable, el, fill, notice, show, when } from "./lib.js";
import { graph } from "./graph.js";

const MAX_DIFF_LINES = 4000;

// A line diff (longest common subsequence): [{op: " " | "-" | "+", text}], in order.
export function lineDiff(before, after) {
  const a = before.split("\n");
  const b = after.split("\n");
  if (a.length > MAX_DIFF_LINES || b.length > MAX_DIFF_LINES) return null;
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) for (let j = m - 1; j >= 0; j -= 1) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push({ op: " ", text: a[i] }); i += 1; j += 1; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) { out.push({ op: "-", text: a[i] }); i += 1; }
    else { out.push({ op: "+", text: b[j] }); j += 1; }
  }
  while (i < n) { out.push({ op: "-", text: a[i] }); i += 1; }
  while (j < m) { out.push({ op: "+", text: b[j] }); j += 1; }
  return out;
}

// Changed lines with three lines of context; longer unchanged runs folded.
function diffView(lines, from, to) {
  if (lines === null) return notice(`These definitions are too long to compare here (over ${MAX_DIFF_LINES} lines).`, "info");
  const changed = lines.filter((l) => l.op !== " ").length;
  if (!changed) return el("p", { id: "diff", class: "hint" }, `v${from} and v${to} have the same definition.`);
  const keep = new Set();
  lines.forEach((l, k) => { if (l.op !== " ") for (let c = k - 3; c <= k + 3; c += 1) keep.add(c); });
  const rows = [];
  let folded = 0;
  lines.forEach((l, k) => {
    if (!keep.has(k)) { folded += 1; return; }
    if (folded) { rows.push(el("span", { class: "fold" }, `… ${folded} unchanged lines\n`)); folded = 0; }
    const kind = l.op === "+" ? "add" : l.op === "-" ? "del" : "same";
    rows.push(el(l.op === "+" ? "ins" : l.op === "-" ? "del" : "span", { class: kind }, `${l.op} ${l.text}\n`));
  });
  if (folded) rows.push(el("span", { class: "fold" }, `… ${folded} unchanged lines\n`));
  const added = lines.filter((l) => l.op === "+").length;
  return el("figure", { class: "diff" },
    el("figcaption", {}, `v${from} → v${to}: ${added} lines added, ${changed - added} removed`),
    el("pre", { id: "diff", "aria-label": `Changes from version ${from} to version ${to}` }, rows));
}

const text = (definition) => JSON.stringify(definition, null, 2);

async function workflowDetail(name, detail) {
  const versions = (await api(`/v1/workflows/${encodeURIComponent(name)}/versions?limit=200`)).items;
  const latest = versions[0];
  const cache = new Map();
  const version = async (v) => {
    if (!cache.has(v)) cache.set(v, api(`/v1/workflows/${encodeURIComponent(name)}/versions/${v}`));
    return cache.get(v);
  };
  const choice = (id, chosen) => el("select", { id, name: id }, versions.map((v) => el("option", { value: v.version, selected: v.version === chosen }, `v${v.version} · ${when(v.created_at)}`)));
  const from = choice("diff-from", versions.length > 1 ? versions[1].version : latest.version);
  const to = choice("diff-to", latest.version);
  const picture = el("div");
  const changes = el("div");
  const source = el("pre", { id: "definition" });
  async function compare() {
    try {
      const [a, b] = await Promise.all([version(Number(from.value)), version(Number(to.value))]);
      fill(picture, el("h3", {}, `Graph of v${b.version}`), graph(b.definition, []));
      fill(changes, diffView(lineDiff(text(a.definition), text(b.definition)), a.version, b.version));
      source.textContent = text(b.definition);
    } catch (error) {
      fill(changes, notice(error.message));
    }
  }
  from.addEventListener("change", compare);
  to.addEventListener("change", compare);
  fill(
    detail,
    el("h2", {}, `${latest.name} v${latest.version}`, latest.archived ? " (archived)" : ""),
    can("operator") ? el("p", {}, el("a", { href: `#/start?workflow=${encodeURIComponent(name)}` }, "Start an execution")) : null,
    picture,
    el("h3", {}, "Versions"),
    el("ul", { id: "versions" }, versions.map((v) => el("li", {}, `v${v.version} · ${when(v.created_at)} · ${v.digest.slice(0, 12)}`))),
    el("h3", { id: "diff-title" }, "Compare versions"),
    el("form", { class: "filters", "aria-labelledby": "diff-title", onsubmit: (e) => e.preventDefault() },
      el("div", {}, el("label", { for: "diff-from" }, "From"), from),
      el("div", {}, el("label", { for: "diff-to" }, "To"), to)),
    changes,
    el("details", {}, el("summary", {}, "Definition"), source),
  );
  await compare();
}

export async function workflowsPage(name) {
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
    if (name) await workflowDetail(name, detail);
  } catch (error) {
    fill(message, notice(error.message));
  }
}

export async function startPage(params) {
  const message = el("div", { "aria-live": "polite" });
  const workflow = el("select", { id: "start-workflow", name: "workflow", required: true });
  const input = el("textarea", { id: "start-input", name: "input", rows: 8, spellcheck: "false" }, "{}");
  const schema = el("details", { class: "schema" });
  const form = el(
    "form",
    { class: "card", "aria-labelledby": "start-title" },
    el("h1", { id: "start-title" }, "Start an execution"),
    message,
    el("label", { for: "start-workflow" }, "Workflow"), workflow,
    el("label", { for: "start-input" }, "Input (JSON, checked against the workflow's input schema)"), input,
    schema,
    el("button", { type: "submit" }, "Start"),
  );
  show(form);
  const showSchema = async () => {
    try {
      const inputs = workflow.value ? (await api(`/v1/workflows/${encodeURIComponent(workflow.value)}`)).definition.inputs : null;
      fill(schema, inputs ? [el("summary", {}, "Input schema"), el("pre", {}, JSON.stringify(inputs, null, 2))] : null);
    } catch (error) {
      fill(schema, null);
    }
  };
  workflow.addEventListener("change", showSchema);
  try {
    const page = await api("/v1/workflows?limit=200");
    const chosen = params.get("workflow");
    fill(workflow, page.items.filter((w) => !w.archived).map((w) => el("option", { value: w.name, selected: w.name === chosen }, `${w.name} (v${w.version})`)));
    showSchema();
  } catch (error) {
    fill(message, notice(error.message));
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let value;
    try {
      value = JSON.parse(input.value || "{}");
    } catch (error) {
      fill(message, notice(`The input is not JSON: ${error.message}`));
      return;
    }
    try {
      const execution = await api("/v1/executions", { method: "POST", body: { workflow: workflow.value, input: value } });
      location.hash = `#/executions/${execution.id}`;
    } catch (error) {
      const problems = (error.problem && error.problem.errors) || (error.problem && error.problem.problems) || [];
      fill(message, notice(error.message), problems.length ? el("ul", {}, problems.map((p) => el("li", {}, `${p.path || ""} ${p.message || p.detail || ""}`))) : null);
    }
  });
}

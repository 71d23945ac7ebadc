// AI decisions: for every ai.route step of the tenant's workflows, the recent routing decisions
// (route, strategy, confidence, rationale) and, for a bandit, what it has learned per route.
import { badge, dataTable, el, fill, graphql, notice, show, when } from "./lib.js";

const RECENT = 20;

const ROUTE_STEPS = `{ workflows(limit: 200) { items { name version definition } } }`;
const RECENT_DECISIONS = `query ($workflow: String!, $step: String!, $limit: Int!) {
  decisions(workflow: $workflow, step: $step) { bandit arms { route successes failures mean } }
  executions(workflow: $workflow, limit: $limit) { items { id status createdAt steps { key stepId status output } } } }`;

function estimates(found) {
  if (!found) return null;
  return el("figure", { class: "estimates" },
    el("figcaption", {}, `What the bandit ${found.bandit} has learned`),
    dataTable(null, "Bandit estimates per route", ["Route", "Successes", "Failures", "Estimated success rate"],
      found.arms.map((a) => el("tr", { "data-route": a.route },
        el("td", {}, a.route), el("td", {}, a.successes), el("td", {}, a.failures),
        el("td", {}, el("meter", { min: 0, max: 1, value: a.mean, "aria-label": `${a.route} estimated success rate` }), ` ${(a.mean * 100).toFixed(1)} %`)))));
}

function decisionsTable(workflow, step, executions) {
  const rows = [];
  for (const x of executions) {
    for (const s of x.steps) {
      if (s.stepId !== step || !s.output || typeof s.output !== "object" || !("route" in s.output)) continue;
      const d = s.output;
      rows.push(el("tr", { "data-execution": x.id, "data-step": s.key },
        el("td", {}, el("a", { href: `#/executions/${x.id}` }, x.id.slice(0, 12)), " ", badge(x.status)),
        el("td", {}, when(x.createdAt)),
        el("td", {}, el("strong", {}, d.route)),
        el("td", {}, d.strategy || ""),
        el("td", {}, d.confidence === undefined || d.confidence === null ? "" : Number(d.confidence).toFixed(2)),
        el("td", {}, d.explored ? "explored" : ""),
        el("td", { class: "rationale" }, d.rationale || "")));
    }
  }
  if (!rows.length) return el("p", { class: "hint" }, `No decisions in the last ${RECENT} executions of ${workflow}.`);
  return el("div", { class: "scroll" }, dataTable(null, `Recent decisions of ${workflow} / ${step}`, ["Execution", "Started", "Route", "Strategy", "Confidence", "", "Rationale"], rows));
}

export async function decisionsPage() {
  const message = el("div");
  const body = el("div", { id: "decisions" });
  show(el("h1", {}, "AI decisions"), el("p", { class: "hint" }, `Routing decisions of ai.route steps in the latest ${RECENT} executions of each workflow.`), message, body);
  try {
    const found = (await graphql(ROUTE_STEPS)).workflows.items;
    const steps = found.flatMap((w) => (w.definition.steps || []).filter((s) => s.type === "ai.route").map((s) => ({ workflow: w.name, step: s })));
    if (!steps.length) return fill(message, notice("No workflow has an ai.route step.", "info"));
    const sections = await Promise.all(steps.map(async ({ workflow, step }) => {
      const data = await graphql(RECENT_DECISIONS, { workflow, step: step.id, limit: RECENT });
      const strategy = (step.with && step.with.strategy) || "rules";
      return el("section", { class: "card wide", "data-route-step": `${workflow}/${step.id}`, "aria-label": `${workflow} / ${step.id}` },
        el("h2", {}, `${workflow} / ${step.id} `, el("span", { class: "hint" }, strategy)),
        estimates(data.decisions),
        decisionsTable(workflow, step.id, data.executions.items));
    }));
    fill(body, sections);
  } catch (error) {
    fill(message, notice(error.message));
  }
}

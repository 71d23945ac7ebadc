// Triggers: schedules with their next fire times and counters; event triggers with the recent
// events that matched them (each match started an execution whose idempotency key is
// "<trigger id>:<event id>"); and the messages the Pub/Sub bridge dead-lettered, with why.
import { api, badge, dataTable, el, fill, notice, show, when } from "./lib.js";

const RECENT = 5;

function nextFires(t) {
  return el("ul", { class: "plain" }, (t.next_fires || []).map((f) => el("li", {}, when(f.at), f.note ? el("span", { class: "hint" }, ` (${f.note})`) : null)));
}

// An event trigger's starts are not counted on the trigger (every event's transaction would write
// it): the executions list, filtered by the trigger, lists and counts them.
function startedLink(t) {
  return el("a", { class: "started", href: `#/executions?trigger=${encodeURIComponent(t.id)}` }, "all executions");
}

async function recentMatches(t, cell) {
  try {
    const page = await api(`/v1/executions?trigger=${encodeURIComponent(t.id)}&limit=${RECENT}`);
    if (!page.items.length) return fill(cell, el("span", { class: "hint" }, "none yet"));
    const prefix = `${t.id}:`;
    fill(cell, el("ul", { class: "plain matches" }, page.items.map((x) => {
      const key = x.idempotency_key || "";
      const event = key.startsWith(prefix) ? key.slice(prefix.length) : key;
      return el("li", { "data-event": event },
        el("code", {}, event || "?"), " → ", el("a", { href: `#/executions/${x.id}` }, x.id.slice(0, 12)), " ", badge(x.status),
        el("span", { class: "hint" }, ` ${when(x.created_at)}`));
    })));
  } catch (error) {
    fill(cell, notice(error.message));
  }
}

async function deadLetters(box) {
  try {
    const items = (await api("/v1/events/dead-letters?limit=50")).items;
    if (!items.length) return fill(box, el("p", { class: "hint" }, "No dead letters."));
    fill(box, dataTable("dead-letters", "Dead-lettered messages, most recent first", ["When", "Subscription", "Reason", "Detail", "Message"],
      items.map((d) => el("tr", { "data-message": d.message_id, "data-reason": d.reason },
        el("td", {}, when(d.at)),
        el("td", {}, d.subscription),
        el("td", {}, el("span", { class: "badge s-failed" }, d.reason)),
        el("td", { class: "error" }, d.detail),
        el("td", {}, el("details", {}, el("summary", {}, `${d.message_id} · ${d.data_bytes} bytes`),
          el("pre", {}, d.data), el("pre", {}, JSON.stringify(d.attributes, null, 2))))))));
  } catch (error) {
    fill(box, notice(error.message));
  }
}

export async function triggersPage() {
  const message = el("div");
  const schedules = el("div", { class: "scroll" });
  const events = el("div", { class: "scroll" });
  const dead = el("div", { class: "scroll" });
  show(el("h1", {}, "Triggers"), message, el("h2", {}, "Schedules"), schedules, el("h2", {}, "Event triggers"), events,
    el("h2", {}, "Dead-lettered events"), el("p", { class: "hint" }, "Messages the Pub/Sub bridge could not turn into events, most recent first."), dead);
  deadLetters(dead);
  try {
    const items = (await api("/v1/triggers?limit=200")).items;
    const counters = (t) => `${t.fired} / ${t.missed} / ${t.skipped} / ${t.buffered}`;
    const common = (t) => [
      el("td", {}, el("code", {}, t.id.slice(0, 12))),
      el("td", {}, el("a", { href: `#/workflows/${encodeURIComponent(t.workflow)}` }, t.workflow)),
      el("td", {}, el("code", {}, JSON.stringify(t.spec))),
      el("td", {}, t.enabled ? "yes" : "no"),
    ];
    const timed = items.filter((t) => t.kind === "schedule");
    const evented = items.filter((t) => t.kind !== "schedule");
    fill(schedules, timed.length ? dataTable("triggers", "Schedule triggers", ["Trigger", "Workflow", "Spec", "Enabled", "Next fires", "Fired / missed / skipped / buffered", "Last error"],
      timed.map((t) => el("tr", { "data-trigger": t.id }, common(t), el("td", {}, nextFires(t)), el("td", {}, counters(t)),
        el("td", {}, t.last_error ? el("span", { class: "error" }, t.last_error) : "")))) : el("p", { class: "hint" }, "No schedules."));
    const cells = evented.map((t) => [t, el("td", { class: "matches-cell" }, el("span", { class: "hint" }, "…"))]);
    fill(events, evented.length ? dataTable("event-triggers", "Event triggers", ["Trigger", "Workflow", "Spec", "Enabled", "Started", `Recent matching events (last ${RECENT})`, "Last error"],
      cells.map(([t, cell]) => el("tr", { "data-trigger": t.id }, common(t), el("td", {}, startedLink(t)), cell,
        el("td", {}, t.last_error ? el("span", { class: "error" }, t.last_error) : "")))) : el("p", { class: "hint" }, "No event triggers."));
    cells.forEach(([t, cell]) => recentMatches(t, cell));
  } catch (error) {
    fill(message, notice(error.message));
  }
}

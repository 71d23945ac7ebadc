// Conveyor console: a small single-page app over the public /v1 API (see api/console/__init__.py).
// This module signs in and routes; each page is its own module.
import { KEY, api, can, el, notice, session, show } from "./lib.js";
import { executionsPage } from "./executions.js";
import { executionPage } from "./execution.js";
import { startPage, workflowsPage } from "./workflows.js";
import { triggersPage } from "./triggers.js";
import { decisionsPage } from "./decisions.js";

function signOut(message) {
  sessionStorage.removeItem(KEY);
  session.me = null;
  renderWho();
  signIn(message);
}
// The API's reason (e.g. "the token was refused: Signature has expired") is shown on the sign-in page.
session.onUnauthorized = (reason) => signOut(`Your credentials were refused (${reason}). Sign in again.`);

function renderWho() {
  const me = session.me;
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
    el("label", { for: "key" }, "API key or OIDC token"),
    field,
    el(
      "p",
      { class: "hint" },
      "Create a key with ",
      el("code", {}, "conveyor keys create"),
      ", or paste a token (JWT) from the identity provider the API trusts. It stays in this tab only.",
    ),
    el("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, field.value.trim());
    try {
      session.me = await api("/v1/whoami");
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

function markCurrent(page) {
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route() {
  if (!sessionStorage.getItem(KEY)) return signIn();
  if (session.me === null) {
    try {
      session.me = await api("/v1/whoami");
    } catch (error) {
      return signIn(error.message);
    }
    renderWho();
  }
  const [path, query] = (location.hash.slice(1) || "/executions").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  markCurrent(parts[0] || "executions");
  if (parts[0] === "executions" && parts[1]) return executionPage(decodeURIComponent(parts[1]));
  if (parts[0] === "start" && can("operator")) return startPage(params);
  if (parts[0] === "workflows") return workflowsPage(parts[1] ? decodeURIComponent(parts[1]) : null);
  if (parts[0] === "triggers") return triggersPage();
  if (parts[0] === "decisions") return decisionsPage();
  markCurrent("executions");
  return executionsPage(params);
}

document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", route);
route();

// Plumbing shared by the console's pages: DOM building (textContent only, never innerHTML, so
// API data cannot inject markup), the API client, the session and small view helpers.

export const KEY = "conveyor.key";
const ROLES = ["viewer", "operator", "editor", "admin"];
export const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "SKIPPED"]);
export const main = document.getElementById("main");

// who is signed in ({tenant, role, subject} or null) and how to leave the current page
export const session = { me: null, leave: () => {}, onUnauthorized: () => {} };

export function el(tag, attrs = {}, ...children) {
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

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && session.me !== null) session.onUnauthorized(error.message);
    throw error;
  }
  return data;
}

// One GraphQL request (same key, same roles); a top-level error becomes an ApiError.
export async function graphql(query, variables = {}) {
  const body = await api("/graphql", { method: "POST", body: { query, variables } });
  if (body.errors && body.errors.length) throw new ApiError(400, { detail: body.errors[0].message });
  return body.data;
}

export const can = (role) => session.me !== null && ROLES.indexOf(session.me.role) >= ROLES.indexOf(role);
export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
export const badge = (status) => el("span", { class: `badge s-${String(status).toLowerCase()}` }, status);

// A table with a caption for screen readers, column headers and rows.
export function dataTable(id, caption, headers, rows) {
  return el(
    "table",
    { id },
    el("caption", { class: "sr-only" }, caption),
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    rows instanceof Node ? rows : el("tbody", {}, rows),
  );
}

// replaceChildren, leaving out the null/false of optional parts (the DOM would print "null").
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

export function show(...nodes) {
  session.leave();
  session.leave = () => {};
  main.replaceChildren(...nodes);
  main.focus();
}

export function notice(text, kind = "error") {
  return el("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// A JSON payload: small ones shown at once, large ones behind a button (rendered on demand).
const LARGE = 2048;
export function payload(value, id) {
  const text = JSON.stringify(value, null, 2);
  if (text === undefined) return el("pre", { id }, "null");
  if (text.length <= LARGE) return el("pre", { id }, text);
  const holder = el("div", { id, class: "large-payload" });
  const button = el("button", { type: "button", onclick: () => fill(holder, el("pre", {}, text)) }, `Show ${(text.length / 1024).toFixed(1)} KB`);
  return fill(holder, button);
}

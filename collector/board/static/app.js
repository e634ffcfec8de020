// The fleetops board: fleet view, task board, task page (with evidence plots) and node page.
// Plain ES modules, no build step, no external assets; data from the collector's JSON API.
import { lineChart, niceNumber, timeLabel } from "./plot.js";

const TOKEN_KEY = "fleetops.token";
const HEALTH = {
  down: ["✖", "down"], fatal: ["✖", "fatal"], critical: ["‼", "critical"], warning: ["▲", "warning"],
  info: ["ℹ", "info"], ok: ["✓", "ok"], unknown: ["?", "unknown"],
};
const STATE_ICON = { open: "●", acknowledged: "◐", in_progress: "▶", resolved: "✓", dismissed: "–" };
const TASK_STATES = ["open", "acknowledged", "in_progress", "resolved", "dismissed"];
const SEVERITIES = ["critical", "warning", "info"];
const ACTION_NAMES = ["RESTART_APP", "RESET_GPU", "REBOOT_NODE", "DRAIN_NODE", "INSPECT_HARDWARE",
  "REPLACE_HARDWARE", "CHECK_COOLING", "CHECK_POWER", "CHECK_NETWORK", "UPDATE_SOFTWARE", "INVESTIGATE_SOFTWARE",
  "CONTACT_VENDOR", "OBSERVE"];
/** What the task page can ask of the API: POST /api/v1/tasks/{id}/{verb} with this body. */
const VERBS = {
  acknowledge: { label: "Acknowledge", when: ["open"], body: (f) => withNote({}, f) },
  assign: { label: "Assign", when: ["open", "acknowledged", "in_progress"], needs: "assignee",
    body: (f) => withNote({ assignee: f.assignee }, f) },
  comment: { label: "Comment", when: TASK_STATES, needs: "note", body: (f) => ({ comment: f.note }) },
  resolve: { label: "Resolve", when: ["open", "acknowledged", "in_progress"], body: (f) => withNote({}, f) },
  dismiss: { label: "Dismiss", when: ["open", "acknowledged", "in_progress"], needs: "note",
    body: (f) => ({ reason: f.note }) },
  // remote operations: the task's own operation (GPU reset, reboot, drain ...), approved in one click
  operations: { label: "Approve and run", when: ["open", "acknowledged", "in_progress"],
    actions: ["RESET_GPU", "REBOOT_NODE", "DRAIN_NODE", "INSPECT_HARDWARE", "REPLACE_HARDWARE", "CONTACT_VENDOR"],
    body: (f) => withNote({ approve: true }, f) },
};
function withNote(body, f) { if (f.note) body.comment = f.note; return body; }

const main = document.getElementById("main");
const statusBox = document.getElementById("status");
let whoami = null;

// ---- helpers ------------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function healthBadge(health) {
  const [icon, text] = HEALTH[health] || HEALTH.unknown;
  return h("span", { class: `badge h-${health}`, "data-health": health }, h("span", { "aria-hidden": "true" }, icon), text);
}
function severityBadge(sev) {
  return healthBadge(sev);
}
function stateBadge(state) {
  return h("span", { class: "badge state", "data-state": state }, h("span", { "aria-hidden": "true" }, STATE_ICON[state] || "?"),
    state.replace("_", " "));
}
function when(iso) {
  if (!iso) return "–";
  const d = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}
function say(text, error = false) {
  statusBox.textContent = text;
  statusBox.classList.toggle("error", error);
}
function token() { return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || ""; }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (!resp.ok) throw new ApiError(resp.status, (data && data.error) || `HTTP ${resp.status}`);
  return data;
}

function denied(err) {
  if (err.status === 401) return "Sign in with an API token first (401).";
  if (err.status === 403) return `Not allowed for your role${whoami && whoami.role ? ` (${whoami.role})` : ""}: ${err.message} (403).`;
  return err.message;
}

async function loadWhoami() {
  const button = document.getElementById("signin");
  try {
    whoami = await api("/api/v1/whoami");
  } catch {
    whoami = null;
  }
  button.textContent = whoami ? `${whoami.name} · ${whoami.role}` : "Sign in";
  button.setAttribute("aria-label", whoami ? `Signed in as ${whoami.name} (${whoami.role}); change token` : "Sign in with an API token");
}

// ---- fleet view ---------------------------------------------------------------------------------

async function fleetView() {
  const data = await api("/api/v1/fleet");
  const counts = data.nodes_by_health || {};
  const page = h("section", { "aria-labelledby": "fleet-title" },
    h("h1", { id: "fleet-title" }, "Fleet"),
    h("div", { class: "summary" },
      ...["down", "critical", "warning", "info", "ok", "unknown"].filter((k) => counts[k])
        .map((k) => h("span", {}, healthBadge(k), ` ${counts[k]} node${counts[k] === 1 ? "" : "s"}`)),
      h("a", { href: "#/tasks?state=open,acknowledged,in_progress" }, `${data.open_tasks} open task${data.open_tasks === 1 ? "" : "s"}`)));
  if (!data.sites.length) page.append(h("p", { class: "muted" }, "No nodes have reported yet."));
  for (const site of data.sites) {
    const racks = h("div", { class: "racks" });
    for (const rack of site.racks) {
      racks.append(h("section", { class: "card rack", "aria-label": `rack ${rack.rack || "unknown"}` },
        h("h3", {}, `Rack ${rack.rack || "?"}`, healthBadge(rack.health)),
        h("ul", { class: "nodes" }, rack.nodes.map(nodeItem))));
    }
    page.append(h("section", { class: "site", "data-site": site.site },
      h("h2", {}, `Site ${site.site}`, healthBadge(site.health)), racks));
  }
  return page;
}

function nodeItem(n) {
  const accels = h("span", { class: "accels", "aria-label": `${n.accelerators.length} accelerators` },
    n.accelerators.map((a) => h("span", {
      class: `accel h-${a.health}`, title: `${a.kind || "accelerator"} ${a.index}: ${a.health}${a.open_tasks.length ? `, task ${a.open_tasks.join(", ")}` : ""}`,
      "data-health": a.health,
    }, a.health === "ok" ? "" : (HEALTH[a.health] || HEALTH.unknown)[0])));
  return h("li", { class: "node", "data-node": n.node, "data-health": n.health },
    h("a", { href: nodeHref(n.site, n.node) },
      healthBadge(n.health), h("strong", {}, n.node), accels,
      n.open_tasks ? h("span", { class: "muted" }, `${n.open_tasks} task${n.open_tasks === 1 ? "" : "s"}: ${n.tasks.map((t) => t.action).join(", ")}`) : ""));
}

// ---- task board ---------------------------------------------------------------------------------

async function tasksView(params) {
  const query = new URLSearchParams();
  for (const key of ["state", "site", "rack", "action", "severity", "node"]) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  query.set("limit", "200");
  const [data, fleet] = await Promise.all([api(`/api/v1/tasks?${query}`), api("/api/v1/fleet")]);
  const sites = fleet.sites.map((s) => s.site);
  const racks = [...new Set(fleet.sites.flatMap((s) => s.racks.map((r) => r.rack)).filter(Boolean))].sort();
  const form = h("form", { class: "filters", "aria-label": "Filter tasks", onsubmit: (e) => { e.preventDefault(); applyFilters(form); } },
    select("state", "State", [["open,acknowledged,in_progress", "not closed"], ...TASK_STATES.map((s) => [s, s.replace("_", " ")])], params.get("state")),
    select("site", "Site", sites.map((s) => [s, s]), params.get("site")),
    select("rack", "Rack", racks.map((r) => [r, r]), params.get("rack")),
    select("action", "Action", ACTION_NAMES.map((a) => [a, a]), params.get("action")),
    select("severity", "Severity", SEVERITIES.map((s) => [s, s]), params.get("severity")),
    h("div", {}, h("label", { for: "f-apply" }, "\u00a0"), h("button", { id: "f-apply", type: "submit", class: "primary" }, "Filter")));
  for (const sel of form.querySelectorAll("select")) sel.addEventListener("change", () => applyFilters(form));
  const list = h("ul", { class: "tasks", "aria-label": "Tasks" }, data.items.map(taskItem));
  return h("section", { "aria-labelledby": "tasks-title" },
    h("h1", { id: "tasks-title" }, "Tasks"), form,
    h("p", { class: "muted", id: "task-count", "aria-live": "polite" }, `${data.total} task${data.total === 1 ? "" : "s"}`),
    data.items.length ? list : h("p", {}, "No tasks match these filters."));
}

function select(name, label, options, current) {
  const id = `f-${name}`;
  return h("div", {}, h("label", { for: id }, label),
    h("select", { id, name }, h("option", { value: "" }, "any"),
      options.map(([value, text]) => h("option", { value, selected: value === current }, text))));
}

function applyFilters(form) {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v) q.set(k, String(v));
  location.hash = `#/tasks?${q}`;
}

// One task of a list: its title first (it wraps; what the findings said in full is on the task page).
function taskItem(t) {
  const loc = t.location || {};
  return h("li", { class: "task", "data-task": t.id, "data-state": t.state },
    h("a", { class: "title", href: `#/tasks/${t.id}` }, t.summary),
    h("div", { class: "line" }, severityBadge(t.severity), stateBadge(t.state),
      h("span", { class: "muted" }, `#${t.id} ${t.action}`)),
    h("div", { class: "line muted" },
      h("a", { href: nodeHref(loc.site, t.node) }, t.node),
      `${loc.site || ""}${loc.rack ? " / " + loc.rack : ""}${loc.accelerator_index !== undefined && loc.accelerator_index !== null ? ` / accelerator ${loc.accelerator_index}` : ""}`,
      t.assignee ? `assigned to ${t.assignee}` : "", h("span", {}, "opened ", when(t.opened_at))));
}

// ---- task page ----------------------------------------------------------------------------------

async function taskView(id) {
  const [task, evidence] = await Promise.all([api(`/api/v1/tasks/${id}`), api(`/api/v1/tasks/${id}/evidence`)]);
  let pages = { items: [] };
  try { pages = await api(`/api/v1/tasks/${id}/pages`); } catch { /* paging data is optional */ }
  const loc = task.location || {};
  const page = h("article", { "aria-labelledby": "task-title", "data-task": task.id, "data-state": task.state },
    h("h1", { id: "task-title" }, `Task #${task.id}: ${task.action}`),
    h("div", { class: "line row" }, severityBadge(task.severity), h("span", { id: "task-state" }, stateBadge(task.state)),
      task.assignee ? h("span", {}, `assigned to ${task.assignee}`) : ""),
    h("p", { class: "task-title", id: "task-summary" }, task.summary),
    actionsPanel(task),
    h("h2", {}, "What to do"),
    h("div", { class: "card" }, h("strong", {}, task.action), h("p", {}, task.runbook)),
    h("h2", {}, "Where"),
    h("dl", { class: "facts" },
      fact("Node", h("a", { href: nodeHref(loc.site, task.node) }, task.node)),
      fact("Site", loc.site), fact("Room", loc.room), fact("Row", loc.row), fact("Rack", loc.rack), fact("Slot", loc.slot),
      fact("Accelerator", loc.accelerator_index ?? ""), fact("Accelerator id", loc.accelerator_id),
      fact("Part", loc.part), fact("PCI bus", loc.pci_bus_id), fact("Serial", loc.serial), fact("Component", task.component),
      fact("Fault", task.fault), fact("Occurrences", task.count), fact("Opened", when(task.opened_at)),
      fact("Updated", when(task.updated_at)), fact("Resolved", task.resolved_at ? when(task.resolved_at) : "")),
    h("h2", {}, "Evidence"),
    findingsList(task.evidence || []),
    evidencePlots(evidence, task),
    eventsList(evidence.events),
    h("h2", {}, "History"),
    h("ol", { class: "history" }, (task.history || []).map((e) =>
      h("li", {}, when(e.at), " ", h("strong", {}, e.actor), ` ${e.change.replace("_", " ")}`,
        e.from_state && e.from_state !== e.to_state ? ` (${e.from_state} → ${e.to_state})` : "",
        e.reason ? h("div", { class: "muted" }, e.reason) : ""))),
    pages.items.length ? h("section", {}, h("h2", {}, "Pages"),
      h("ul", {}, pages.items.map((p) => h("li", {}, `${p.receiver}: ${p.event} ${p.state}`,
        p.attempts > 1 ? ` after ${p.attempts} tries` : "", p.last_error ? h("span", { class: "muted" }, ` (${p.last_error})`) : "")))) : "");
  return page;
}

function fact(label, value) {
  if (value === undefined || value === null || value === "") return null;
  return [h("dt", {}, label), h("dd", {}, value)];
}

function actionsPanel(task) {
  const panel = h("section", { class: "card", "aria-labelledby": "act-title" }, h("h2", { id: "act-title" }, "Act"));
  const role = whoami && whoami.role;
  const readOnly = role === "viewer";
  if (readOnly) panel.append(h("p", { class: "muted", id: "read-only" }, "Your role (viewer) can read only: acknowledging, assigning, commenting and resolving need an operator token."));
  if (!whoami || whoami.role === "local") panel.append(h("p", { class: "muted" }, "Sign in with an operator token to act on this task."));
  const note = h("textarea", { id: "act-note", rows: 2, placeholder: "What you did or found", class: "wide" });
  const assignee = h("input", { id: "act-assignee", placeholder: "name", autocomplete: "off" });
  panel.append(h("label", { for: "act-note" }, "Note (comment, reason)"), note,
    h("div", { class: "row" }, h("div", {}, h("label", { for: "act-assignee" }, "Assignee"), assignee)));
  const buttons = h("div", { class: "actions" });
  for (const [verb, spec] of Object.entries(VERBS)) {
    if (!spec.when.includes(task.state) || (spec.actions && !spec.actions.includes(task.action))) continue;
    buttons.append(h("button", {
      type: "button", "data-verb": verb, class: verb === "acknowledge" ? "primary" : "", "aria-disabled": readOnly ? "true" : null,
      onclick: async (e) => {
        const fields = { note: note.value.trim(), assignee: assignee.value.trim() };
        if (spec.needs && !fields[spec.needs]) { say(`${spec.label}: fill in the ${spec.needs === "note" ? "note" : "assignee"} first.`, true); return; }
        e.currentTarget.disabled = true;
        try {
          await api(`/api/v1/tasks/${task.id}/${verb}`, { method: "POST", body: spec.body(fields) });
          say(`${spec.label}: done.`);
          await render();
        } catch (err) {
          say(`${spec.label} failed: ${denied(err)}`, true);
          e.currentTarget.disabled = false;
        }
      },
    }, spec.label));
  }
  panel.append(buttons);
  return panel;
}

// The findings joined into the task, oldest first: each one's title and all it said.
function findingsList(entries) {
  const found = entries.filter((e) => e.summary || e.detail);
  if (!found.length) return null;
  return h("ol", { class: "findings", "aria-label": "Findings" }, found.map((e) => h("li", {},
    typeof e.at === "number" ? when(e.at) : "", " ", h("strong", {}, e.summary || e.detail),
    e.detail && e.detail !== e.summary ? h("div", { class: "muted" }, e.detail) : "")));
}

function evidencePlots(evidence, task) {
  const wrap = h("div", { class: "plots", id: "plots" });
  if (!evidence.series.length) {
    return h("p", { class: "muted" }, "No readings were recorded around this fault (the node sends none, or they are older than the collector keeps).");
  }
  const ctx = { start: evidence.window.start, end: evidence.window.end, opened: evidence.opened_at, events: evidence.events };
  for (const s of evidence.series) {
    const last = s.points[s.points.length - 1];
    wrap.append(h("figure", { class: "plot", "data-key": s.key },
      h("figcaption", {}, h("span", {}, s.label), h("span", { class: "muted" }, `latest ${niceNumber(last[1])} ${s.unit} at ${timeLabel(last[0])}`)),
      lineChart(s, ctx)));
  }
  return wrap;
}

function eventsList(events) {
  if (!events.length) return null;
  return h("details", { open: events.length <= 8 }, h("summary", {}, `${events.length} event${events.length === 1 ? "" : "s"} around the fault`),
    h("ul", {}, events.map((e) => h("li", {}, h("time", {}, timeLabel(e.ts)), ` ${e.label}`,
      e.severity ? ` (${e.severity})` : "", e.message ? `: ${e.message}` : ""))));
}

// ---- node page ----------------------------------------------------------------------------------

const READING_COLUMNS = [
  ["temperature_celsius", "Temp °C"], ["power_watts", "Power W"], ["sm_clock_mhz", "SM MHz"],
  ["utilization_percent", "Util %"], ["ecc_volatile_uncorrected_total", "ECC unc."],
  ["pcie_link_width", "PCIe width"], ["nvlink_links_up", "NVLink up"],
];

const HARDWARE_KIND_LABELS = {
  nvswitch_sxid: "NVSwitch SXid", pcie_aer: "PCIe AER", machine_check: "Machine check",
  memory_error: "Memory error (EDAC)", filesystem_readonly: "Read-only filesystem", gpu_init_failed: "GPU init failed",
};

// One row per unit (a DIMM, a PCIe device, an NVSwitch): a storm is one line, not a page of events.
function hardwareTable(entries, windowS) {
  const days = windowS ? Math.round(windowS / 86400) : 7;
  if (!entries.length) return h("p", { class: "hardware-none" }, `None in the last ${days} days.`);
  return h("div", { class: "scroll" }, h("table", { class: "hardware" },
    h("thead", {}, h("tr", {}, ["Unit", "Signal", "Occurrences", "Worst", "Last", "Latest"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, entries.map((e) => h("tr", { "data-kind": e.kind },
      h("th", { scope: "row" }, e.unit), h("td", {}, HARDWARE_KIND_LABELS[e.kind] || e.kind),
      h("td", {}, String(e.occurrences)), h("td", {}, severityBadge(e.worst)),
      h("td", {}, h("time", {}, timeLabel(e.last_ts))), h("td", {}, e.detail || ""))))));
}

// A node is its site and its name: names repeat across sites.
function nodePath(site, name) {
  return `/sites/${encodeURIComponent(site || "")}/nodes/${encodeURIComponent(name)}`;
}

function nodeHref(site, name) {
  return `#${nodePath(site, name)}`;
}

async function nodeView(site, name) {
  const [node, events] = await Promise.all([
    api(`/api/v1${nodePath(site, name)}`), api(`/api/v1${nodePath(site, name)}/events`)]);
  const loc = node.location || {};
  const host = node.host || {};
  const readings = new Map((node.readings.accelerators || []).map((r) => [r.index, r]));
  const columns = READING_COLUMNS.filter(([k]) => [...readings.values()].some((r) => r[k] !== undefined && r[k] !== null));
  return h("article", { "aria-labelledby": "node-title", "data-node": node.node },
    h("h1", { id: "node-title" }, node.node),
    h("div", { class: "row" }, healthBadge(node.status === "offline" ? "down" : node.status === "online" ? "ok" : "unknown"),
      h("span", {}, node.status), h("span", { class: "muted" }, "last seen ", when(node.last_seen))),
    h("h2", {}, "Inventory"),
    h("dl", { class: "facts" }, fact("Site", node.site), fact("Room", loc.room), fact("Row", loc.row), fact("Rack", loc.rack),
      fact("Slot", loc.slot), fact("Hostname", node.hostname), fact("OS", host.os), fact("Kernel", host.kernel),
      fact("CPUs", host.cpu_count), fact("Agent", node.agent_version), fact("Session", node.session)),
    h("h2", {}, "Accelerators and current readings"),
    h("div", { class: "scroll" }, h("table", { class: "readings" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "#"), h("th", { scope: "col" }, "Model / id"),
        columns.map(([, label]) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, node.accelerators.map((a) => {
        const r = readings.get(a.index) || {};
        return h("tr", {}, h("th", { scope: "row" }, a.index), h("td", {}, `${a.model || a.kind} ${a.serial ? "· " + a.serial : ""}`),
          columns.map(([k]) => h("td", {}, r.lost ? "lost" : r[k] === undefined || r[k] === null ? "no data" : niceNumber(Number(r[k])))));
      })))),
    h("p", { class: "muted" }, "Readings of ", when(node.readings.ts)),
    h("h2", {}, "Open tasks"),
    node.tasks.length ? h("ul", { class: "tasks" }, node.tasks.map(taskItem)) : h("p", {}, "None."),
    h("h2", {}, "Hardware faults the kernel reported"),
    hardwareTable(events.hardware || [], events.hardware_window_s),
    h("h2", {}, "Recent events"),
    events.items.length ? h("ul", {}, events.items.map((e) => h("li", {}, when(e.ts), ` ${e.label}`,
      e.accelerator_index !== null && e.accelerator_index !== undefined ? ` on accelerator ${e.accelerator_index}` : "",
      e.severity ? ` (${e.severity})` : "", e.message ? `: ${e.message}` : ""))) : h("p", {}, "None stored."));
}

// ---- routing ------------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = hash.split("?");
  const params = new URLSearchParams(qs || "");
  let m;
  if ((m = path.match(/^\/tasks\/(\d+)$/))) return { nav: "tasks", title: `Task ${m[1]}`, view: () => taskView(m[1]) };
  if (path === "/tasks") return { nav: "tasks", title: "Tasks", view: () => tasksView(params) };
  if ((m = path.match(/^\/sites\/([^/]+)\/nodes\/([^/]+)$/))) {
    const site = decodeURIComponent(m[1]);
    const name = decodeURIComponent(m[2]);
    return { nav: "fleet", title: `${name} (${site})`, view: () => nodeView(site, name) };
  }
  return { nav: "fleet", title: "Fleet", view: fleetView };
}

async function render() {
  const r = route();
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === r.nav) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.title = `${r.title} · fleetops`;
  try {
    const view = await r.view();
    main.replaceChildren(view);
    main.dataset.view = r.nav;
    main.dataset.ready = String(Date.now());
  } catch (err) {
    main.replaceChildren(h("p", { class: "error" }, `Could not load this page: ${denied(err)}`));
    main.dataset.ready = String(Date.now());
  }
}

function setupToken() {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("signin").addEventListener("click", () => { input.value = ""; dialog.showModal(); input.focus(); });
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue === "save" && input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    if (dialog.returnValue === "clear") { sessionStorage.removeItem(TOKEN_KEY); localStorage.removeItem(TOKEN_KEY); }
    await loadWhoami();
    await render();
  });
}

window.addEventListener("hashchange", () => { say(""); render().then(() => main.focus({ preventScroll: true })); });
setupToken();
loadWhoami().then(render);
setInterval(() => { if (!document.hidden && !document.activeElement?.matches("input, textarea, select")) render(); }, 15000);

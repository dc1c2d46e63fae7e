"use strict";
// The actorflow dashboard's page: one view at a time, its data from /api/*, redrawn on each
// summary the server pushes (/api/events), never by reloading. All text goes in with
// textContent (nothing from the cluster is parsed as HTML).

const S = { view: "cluster", page: 0, state: "", q: "", actor: null, job: null, worker: null,
            busy: false, again: false, summary: null };

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick" || k === "oninput" || k === "onchange") node[k] = v;
    else if (k === "style") node.style.cssText = v;  // CSSOM: allowed by the page's CSP
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin",
                                headers: { Accept: "application/json" } });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

// a view's part that may fail alone (a log that is gone): its error, not the whole view's
async function softApi(path) {
  try { return await api(path); } catch (e) { return { unavailable: String(e.message || e) }; }
}

const fmt = {
  num: (v) => (v === undefined || v === null || v === "") ? "-" : Number(v).toLocaleString(),
  bytes: (v) => {
    if (v === undefined || v === null) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let n = Number(v), i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  },
  secs: (v) => (v === undefined || v === null) ? "-" : (v < 1 ? (v * 1000).toFixed(1) + " ms" : Number(v).toFixed(2) + " s"),
  pct: (v) => (v === undefined || v === null) ? "-" : Number(v).toFixed(1) + " %",
  time: (v) => v ? new Date(Number(v) * 1000).toLocaleTimeString() : "-",
  res: (m) => Object.entries(m || {}).map(([k, v]) => k + " " + (+v).toFixed(2).replace(/\.?0+$/, "")).join(", ") || "-",
};

function stateCell(state) { return el("td", { class: "state-" + state }, state); }

function table(id, heads, rows, cls) {
  return el("table", { id, class: cls },
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function pager(data, onPage) {
  if (!data || data.pages <= 1) return el("div", { class: "note" }, fmt.num(data ? data.total : 0) + " rows");
  return el("div", { class: "pager" },
    el("button", { onclick: () => onPage(data.page - 1), disabled: data.page <= 0 ? "" : null }, "<"),
    `page ${data.page + 1} of ${data.pages} (${fmt.num(data.total)} rows)`,
    el("button", { onclick: () => onPage(data.page + 1),
                   disabled: data.page >= data.pages - 1 ? "" : null }, ">"));
}

function unavailable(data) {
  return data && data.unavailable ? el("p", { class: "note unavailable" }, "Not available: " + data.unavailable) : null;
}

function logBox(id, data) {
  if (unavailable(data)) return unavailable(data);
  const lines = (data && data.lines) || [];
  return el("pre", { class: "log", id }, lines.length ? lines.join("\n") : "(no lines yet)");
}

// -- views --------------------------------------------------------------------------------------

const VIEWS = {
  async cluster() {
    const data = await api("/api/cluster");
    if (unavailable(data)) return unavailable(data);
    const rows = data.nodes.map((n) => {
      const total = n.resources || {}, used = n.used || {};
      const cpu = total.CPU ? (used.CPU || 0) / total.CPU : 0;
      return el("tr", { class: "node", "data-node-id": n.node_id },
        el("td", {}, n.node_id), el("td", {}, n.address || "-"),
        stateCell(n.alive ? "ALIVE" : "DEAD"),
        el("td", {}, fmt.res(used) + " of " + fmt.res(total),
           el("div", { class: "bar" }, el("span", { style: `width:${Math.round(cpu * 100)}%` }))),
        el("td", { class: "num" }, fmt.pct(n.cpu_percent)),
        el("td", { class: "num" }, fmt.bytes(n.mem_used) + " / " + fmt.bytes(n.mem_total)));
    });
    const sum = (key) => {
      const out = {};
      for (const n of data.nodes.filter((n) => n.alive)) for (const [k, v] of Object.entries(n[key] || {})) out[k] = (out[k] || 0) + v;
      return out;
    };
    const totals = sum("resources"), usedAll = sum("used");
    const totalRows = Object.keys(totals).sort().map((k) => el("tr", {}, el("td", {}, k),
      el("td", { class: "num" }, fmt.num(+(usedAll[k] || 0).toFixed(3))), el("td", { class: "num" }, fmt.num(+totals[k].toFixed(3))),
      el("td", {}, el("div", { class: "bar" }, el("span", { style: `width:${Math.round(100 * (usedAll[k] || 0) / (totals[k] || 1))}%` })))));
    return el("div", {}, el("h2", {}, "Resources of the live nodes"),
      table("resources-table", ["resource", "used", "total", ""], totalRows),
      el("h2", {}, "Nodes"),
      table("nodes-table", ["node", "address", "state", "resources used / total", "CPU use", "memory used / total"], rows));
  },

  async jobs() {
    const data = await api("/api/jobs");
    if (unavailable(data)) return unavailable(data);
    const pick = (kind, id) => () => { S.job = { kind, id }; redraw(); };
    const rows = data.rows.map((j) => el("tr", { class: "click job", "data-job-id": j.job_id,
                                                 onclick: pick("submitted", j.job_id) },
      el("td", {}, j.job_id), stateCell(j.status), el("td", {}, j.entrypoint || "-"),
      el("td", {}, fmt.time(j.start_time)), el("td", {}, fmt.time(j.end_time)),
      el("td", {}, j.message || "")));
    const drivers = data.drivers.map((j) => el("tr", { class: "click driver", "data-job-id": j.job_id,
                                                       onclick: pick("driver", j.job_id) },
      el("td", {}, j.job_id), stateCell(j.status), el("td", {}, j.entrypoint || "-"),
      el("td", {}, j.namespace || "-"), el("td", { class: "num" }, j.driver_pid ?? "-"),
      el("td", {}, fmt.time(j.start_time)), el("td", {}, fmt.time(j.end_time))));
    const parts = [];
    if (S.job) {
      const path = S.job.kind === "submitted"
        ? "/api/jobs/" + encodeURIComponent(S.job.id) + "/logs"
        : "/api/logs?" + new URLSearchParams({ job_id: S.job.id });
      parts.push(el("h2", {}, "Logs of job " + S.job.id), logBox("job-log", await softApi(path)));
    }
    parts.push(el("h2", {}, "Submitted jobs"),
      table("jobs-table", ["job", "status", "entrypoint", "started", "ended", "message"], rows),
      el("h2", {}, "Drivers (every driver is a job)"),
      table("drivers-table", ["job", "status", "entrypoint", "namespace", "pid", "started", "ended"], drivers));
    return el("div", {}, parts);
  },

  async actors() {
    const q = new URLSearchParams({ page: S.page, size: 50, state: S.state, q: S.q });
    const data = await api("/api/actors?" + q);
    if (unavailable(data)) return unavailable(data);
    const rows = data.rows.map((a) => el("tr", { class: "click actor", "data-actor-id": a.actor_id,
                                                 onclick: () => { S.actor = a.actor_id; redraw(); } },
      el("td", {}, a.actor_id), el("td", {}, a.class_name || "-"), el("td", {}, a.name || "-"),
      stateCell(a.state), el("td", { class: "num" }, fmt.num(a.restarts ?? a.num_restarts)),
      el("td", {}, a.node_id || "-"), el("td", { class: "num" }, a.pid ?? "-"),
      el("td", {}, a.job_id || "-")));
    const parts = [table("actors-table", ["actor", "class", "name", "state", "restarts", "node", "pid", "job"], rows),
                   pager(data, (p) => { S.page = p; redraw(); })];
    if (S.actor) parts.unshift(await actorDetail(S.actor));
    return el("div", {}, parts);
  },

  async tasks() {
    const q = new URLSearchParams({ page: S.page, size: 50, q: S.q });
    const data = await api("/api/tasks?" + q);
    if (unavailable(data)) return unavailable(data);
    const states = Object.entries(data.states).sort();
    const counts = el("table", { id: "task-states", class: "compact" }, el("tr", {}, states.map(([s]) => el("th", {}, s))),
      el("tr", {}, states.map(([s, n]) => el("td", { class: "num", "data-state": s }, fmt.num(n)))));
    const names = [...new Set(data.by_name.rows.flatMap((r) => Object.keys(r.states)))].sort();
    const rows = data.by_name.rows.map((r) => el("tr", { class: "task-name", "data-name": r.name },
      el("td", {}, r.name), el("td", {}, r.kind || "-"),
      names.map((s) => el("td", { class: "num" }, fmt.num(r.states[s] || 0))),
      el("td", { class: "num" }, fmt.num(r.total)), el("td", { class: "num" }, fmt.secs(r.mean_s)),
      el("td", { class: "num" }, fmt.secs(r.max_s))));
    const failures = data.failures.map((t) => el("tr", { class: "failure" },
      el("td", {}, t.task_id || "-"), el("td", {}, t.name || "-"), el("td", {}, fmt.time(t.end_time)),
      el("td", {}, t.node_id || "-"), el("td", { class: "num" }, t.pid ?? "-"),
      el("td", { class: "error" }, [t.error_type, t.error_message].filter(Boolean).join(": ") || "-")));
    return el("div", {}, el("h2", {}, "Tasks by state"), counts,
      el("h2", {}, "By name"), table("tasks-by-name", ["name", "kind", ...names, "total", "mean run time", "max run time"], rows),
      pager(data.by_name, (p) => { S.page = p; redraw(); }),
      el("h2", {}, "Recent failures"), table("task-failures", ["task", "name", "ended", "node", "pid", "error"], failures));
  },

  async objects() {
    const data = await api("/api/objects?" + new URLSearchParams({ page: S.page, size: 50 }));
    if (unavailable(data)) return unavailable(data);
    const nodes = data.per_node.map((n) => el("tr", { class: "store" }, el("td", {}, n.node_id),
      el("td", { class: "num" }, fmt.num(n.objects)), el("td", { class: "num" }, fmt.bytes(n.bytes)),
      el("td", { class: "num" }, fmt.bytes(n.object_store_used) + " / " + fmt.bytes(n.object_store_limit)),
      el("td", { class: "num" }, fmt.bytes(n.spilled_now_bytes)), el("td", { class: "num" }, fmt.bytes(n.spilled_bytes)),
      el("td", { class: "num" }, fmt.bytes(n.restored_bytes))));
    const rows = data.largest.rows.map((o) => el("tr", { class: "object" }, el("td", {}, o.object ?? o.object_id ?? "-"),
      el("td", { class: "num" }, fmt.bytes(o.bytes ?? o.size)), el("td", {}, o.node_id || "-"),
      el("td", {}, o.where || "shared memory")));
    return el("div", {}, el("h2", {}, "Memory per node"),
      table("objects-per-node", ["node", "objects", "bytes", "store used / limit", "on disk now", "spilled in all", "restored"], nodes),
      el("h2", {}, "Largest objects"), table("objects-largest", ["object (shared-memory segment)", "size", "node", "where"], rows),
      pager(data.largest, (p) => { S.page = p; redraw(); }));
  },

  async placement_groups() {
    const data = await api("/api/placement_groups");
    if (unavailable(data)) return unavailable(data);
    const rows = data.rows.map((g) => el("tr", { class: "pg", "data-pg-id": g.placement_group_id },
      el("td", {}, g.placement_group_id || "-"), el("td", {}, g.name || "-"), stateCell(g.state),
      el("td", {}, g.strategy || "-"), el("td", {}, g.job_id || "-"),
      el("td", {}, (g.bundles || []).map((b, i) => fmt.res(b) + " on " +
        ((g.bundles_to_node_id || {})[i] || "-")).join(" | "))));
    return el("div", {}, el("h2", {}, "Placement groups"),
      table("pg-table", ["group", "name", "state", "strategy", "job", "bundles (on node)"], rows));
  },

  async logs() {
    const data = await api("/api/workers");
    if (unavailable(data)) return unavailable(data);
    const rows = data.rows.map((w) => el("tr", { class: "click worker", "data-pid": w.pid, "data-node-id": w.node_id,
                                                 onclick: () => { S.worker = w; redraw(); } },
      el("td", {}, w.node_id), el("td", { class: "num" }, w.pid), el("td", {}, w.file),
      el("td", {}, w.actor ? w.actor + " (" + w.actor_id + ")" : "-")));
    const parts = [el("h2", {}, "Workers"), table("workers-table", ["node", "pid", "file", "actor"], rows)];
    if (!rows.length) parts.push(el("p", { class: "note" }, "No log files: nodes started by `actorflow start` write them (an embedded cluster prints to its driver)."));
    if (S.worker) {
      const q = new URLSearchParams({ node_id: S.worker.node_id, pid: S.worker.pid });
      parts.unshift(el("h2", {}, `Log of worker ${S.worker.pid} on node ${S.worker.node_id}`),
                    logBox("worker-log", await softApi("/api/logs?" + q)));
    }
    return el("div", {}, parts);
  },
};

async function actorDetail(id) {
  const a = await api("/api/actors/" + encodeURIComponent(id));
  const fields = Object.entries(a).filter(([, v]) => typeof v !== "object" || v === null);
  const log = await softApi("/api/logs?" + new URLSearchParams({ actor_id: id }));
  return el("div", { class: "detail", id: "actor-detail" },
    el("button", { onclick: () => { S.actor = null; redraw(); } }, "close"),
    el("h2", {}, "Actor " + id),
    el("dl", {}, fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null ? "-" : String(v))])),
    el("h2", {}, "Log"), logBox("actor-log", log));
}

// -- tools above a view (kept across redraws, so typing is not interrupted) -----------------------

function tools(view) {
  if (view === "actors") {
    const states = ["", "ALIVE", "PENDING", "RESTARTING", "DEAD"];
    return el("div", { class: "tools" },
      el("select", { id: "actor-state", onchange: (e) => { S.state = e.target.value; S.page = 0; redraw(); } },
         states.map((s) => el("option", { value: s }, s || "any state"))),
      el("input", { id: "search", type: "search", placeholder: "search id, class, name, node, job, pid",
                    oninput: (e) => { S.q = e.target.value; S.page = 0; redraw(); } }));
  }
  if (view === "tasks") {
    return el("div", { class: "tools" }, el("input", { id: "search", type: "search", placeholder: "search task names",
      oninput: (e) => { S.q = e.target.value; S.page = 0; redraw(); } }));
  }
  return null;
}

function show(view) {
  if (!VIEWS[view]) view = "cluster";
  Object.assign(S, { view, page: 0, state: "", q: "", actor: null, job: null, worker: null });
  document.querySelectorAll("#tabs a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  const main = document.getElementById("view");
  main.replaceChildren(...[tools(view), el("div", { id: "body" }, el("p", { class: "note" }, "loading..."))].filter(Boolean));
  redraw();
}

async function redraw() {
  if (S.busy) { S.again = true; return; }
  S.busy = true;
  try {
    do {
      S.again = false;
      const view = S.view;
      let node;
      try { node = await VIEWS[view](); } catch (e) { node = el("p", { class: "error" }, String(e.message || e)); }
      const body = document.getElementById("body");
      if (body && view === S.view) body.replaceChildren(node);
    } while (S.again);
  } finally { S.busy = false; }
}

function onSummary(data) {
  S.summary = data;
  const count = (m) => Object.entries(m || {}).map(([k, v]) => k.toLowerCase() + " " + fmt.num(v)).join(", ") || "0";
  if (data.unavailable) { document.getElementById("live-tasks").textContent = data.unavailable; return; }
  document.getElementById("live-nodes").textContent = "nodes " + data.nodes.alive + (data.nodes.dead ? ` (+${data.nodes.dead} dead)` : "");
  document.getElementById("live-actors").textContent = "actors: " + count(data.actors);
  document.getElementById("live-tasks").textContent = "tasks: " + count(data.tasks);
  redraw();
}

function connect() {
  const dot = document.getElementById("live-status");
  const events = new EventSource("/api/events");
  events.addEventListener("summary", (e) => { dot.className = "dot on"; onSummary(JSON.parse(e.data)); });
  events.onerror = () => { dot.className = "dot off"; };
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));
document.addEventListener("DOMContentLoaded", () => { show(location.hash.slice(1) || "cluster"); connect(); });

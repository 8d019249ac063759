// The operator page: reads /ui/api/overview every second and draws it; forms call the page's
// API (the control service runs them as the Query API's actions). Text from the service is
// always set as text, never as markup.
"use strict";

const REFRESH_MS = 1000;
const cards = new Map();
let timer = null;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function call(path, body) {
  const options = body === undefined
    ? { credentials: "same-origin" }
    : { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  const text = await response.text();
  const answer = text ? JSON.parse(text) : {};
  if (!response.ok) {
    const error = new Error(answer.error ? `${answer.error.code}: ${answer.error.message}` : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return answer;
}

function show(id, visible) { document.getElementById(id).hidden = !visible; }
function say(id, text) { document.getElementById(id).textContent = text; }
function time(seconds) { return seconds ? new Date(seconds * 1000).toISOString().replace(".000", "") : "—"; }

function signedOut() {
  if (timer) clearInterval(timer);
  timer = null;
  for (const card of cards.values()) card.root.remove();
  cards.clear();
  show("dashboard", false);
  show("logout", false);
  show("login-panel", true);
  say("who", "");
}

async function refresh() {
  let overview;
  try {
    overview = await call("/ui/api/overview");
  } catch (error) {
    if (error.status === 401) return signedOut();
    document.getElementById("live").className = "live stale";
    return;
  }
  document.getElementById("live").className = "live";
  show("login-panel", false);
  show("dashboard", true);
  show("logout", true);
  say("who", `signed in as ${overview.signed_in_as}`);
  say("version", String(overview.state_version));
  say("updated", new Date().toLocaleTimeString());
  const seen = new Set();
  for (const lb of overview.load_balancers) {
    seen.add(lb.name);
    let card = cards.get(lb.name);
    if (!card) {
      card = makeCard(lb.name);
      cards.set(lb.name, card);
      document.getElementById("load-balancers").append(card.root);
    }
    drawCard(card, lb);
  }
  for (const [name, card] of cards) {
    if (!seen.has(name)) { card.root.remove(); cards.delete(name); }
  }
}

function start() {
  refresh();
  if (!timer) timer = setInterval(refresh, REFRESH_MS);
}

function table(headings) {
  const body = el("tbody");
  const root = el("table", {}, el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { text: h })))), body);
  return { root, body };
}

function makeCard(name) {
  const root = el("section", { className: "card", id: `lb-${name}`, "data-lb": name });
  const title = el("h2", { text: name });
  const where = el("p", { className: "muted" });
  const listeners = table(["Listener", "Bound on", "Instance port", "Stickiness policy", "Pinned", "New sessions", "Re-pinned", "Refreshed", "Rejected cookies"]);
  listeners.root.classList.add("listeners");
  const instances = table(["Instance", "Address", "Health", "Description"]);
  instances.root.classList.add("instances");
  const policies = table(["Policy", "Type", "What it does"]);
  policies.root.classList.add("policies");

  const port = el("select", { name: "port", className: "listener-port" });
  const policy = el("select", { name: "policy", className: "listener-policy" });
  const apply = el("button", { type: "submit", text: "Set policy", className: "set-policy" });
  const setForm = el("form", { className: "inline set-policy-form" }, el("span", { text: "Listener" }), port,
    el("span", { text: "uses" }), policy, apply);
  setForm.addEventListener("submit", (event) => {
    event.preventDefault();
    act(apply, "/ui/api/listener-policy", { load_balancer: name, port: Number(port.value), policy: policy.value || null },
      `Listener ${port.value} of ${name} now uses ${policy.value || "no policy"}, in force on every filter.`);
  });

  const kind = el("select", { name: "kind", className: "new-policy-kind" },
    el("option", { value: "lb_cookie", text: "LB cookie (duration)" }),
    el("option", { value: "app_cookie", text: "Application cookie" }));
  const policyName = el("input", { name: "name", className: "new-policy-name", placeholder: "policy name", required: "" });
  const detail = el("input", { name: "detail", className: "new-policy-detail", placeholder: "seconds (empty: browser session)" });
  kind.addEventListener("change", () => {
    detail.placeholder = kind.value === "lb_cookie" ? "seconds (empty: browser session)" : "the application's cookie name";
  });
  const create = el("button", { type: "submit", text: "Create policy", className: "create-policy" });
  const createForm = el("form", { className: "inline create-policy-form" }, kind, policyName, detail, create);
  createForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = kind.value === "lb_cookie"
      ? { kind: "lb_cookie", load_balancer: name, name: policyName.value,
          expiration_period: detail.value.trim() === "" ? null : Number(detail.value) }
      : { kind: "app_cookie", load_balancer: name, name: policyName.value, cookie_name: detail.value };
    act(create, "/ui/api/policies", body, `Policy ${policyName.value} created on ${name}.`);
  });

  root.append(title, where,
    el("h3", { text: "Listeners" }), listeners.root, setForm,
    el("h3", { text: "Instances" }), instances.root,
    el("h3", { text: "Policies" }), policies.root, createForm);
  return { root, where, listeners, instances, policies, port, policy, optionsKey: "" };
}

function rejectedText(rejected) {
  const parts = Object.entries(rejected).filter(([, n]) => n > 0).map(([reason, n]) => `${reason}: ${n}`);
  return parts.length ? parts.join(", ") : "none";
}

function drawCard(card, lb) {
  card.where.textContent = `${lb.dns_name} → ${lb.address || "no address"} · health check ${lb.health_check.target} every ${lb.health_check.interval} s`;
  card.listeners.body.replaceChildren(...lb.listeners.map((l) => el("tr", { "data-port": String(l.port) },
    el("td", {}, el("span", { text: `${l.protocol} ${l.port}` }),
      ...(l.certificate ? [el("br"), el("span", { className: "certificate muted",
        text: `certificate ${l.certificate.name} (${l.certificate.hosts.join(", ")}), expires ${l.certificate.expires.slice(0, 10)}` })] : []),
      ...(l.tls_policy ? [el("br"), el("span", { className: "tls-policy muted", text: `${l.tls_policy.name}: ${l.tls_policy.summary}` })] : [])),
    el("td", { text: l.bound || "—" }),
    el("td", { text: `${l.instance_protocol} ${l.instance_port}` }),
    el("td", { className: "policy", text: l.policy ? `${l.policy.name}: ${l.policy.summary}` : "none (not sticky)" }),
    el("td", { className: "counters", "data-counter": "pinned", text: String(l.counters.pinned) }),
    el("td", { className: "counters", "data-counter": "assigned", text: String(l.counters.assigned) }),
    el("td", { className: "counters", "data-counter": "repinned", text: String(l.counters.repinned) }),
    el("td", { className: "counters", "data-counter": "refreshed", text: String(l.counters.refreshed) }),
    el("td", { className: "counters", "data-counter": "rejected", text: rejectedText(l.counters.rejected) }))));
  card.instances.body.replaceChildren(...lb.instances.map((i) => el("tr", { "data-instance": i.id },
    el("td", { text: i.id }),
    el("td", { text: i.address || "unknown" }),
    el("td", {}, el("span", { className: `badge state ${i.draining ? "draining" : i.state}`, text: i.draining ? `${i.state}, draining` : i.state })),
    el("td", { className: "muted", text: i.description === "N/A" ? "" : i.description }))));
  card.policies.body.replaceChildren(...lb.policies.map((p) => el("tr", { "data-policy": p.name },
    el("td", { text: p.name }), el("td", { text: p.type }), el("td", { text: p.summary }))));
  // The forms' choices change only when listeners or policies do, so a choice being made stays.
  const optionsKey = JSON.stringify([lb.listeners.map((l) => l.port), lb.policies.map((p) => p.name)]);
  if (optionsKey !== card.optionsKey) {
    card.optionsKey = optionsKey;
    const [port, policy] = [card.port.value, card.policy.value];
    card.port.replaceChildren(...lb.listeners.map((l) => el("option", { value: String(l.port), text: `${l.protocol} ${l.port}` })));
    card.policy.replaceChildren(el("option", { value: "", text: "no policy (not sticky)" }),
      ...lb.policies.map((p) => el("option", { value: p.name, text: p.name })));
    if ([...card.port.options].some((o) => o.value === port)) card.port.value = port;
    if ([...card.policy.options].some((o) => o.value === policy)) card.policy.value = policy;
  }
}

async function act(button, path, body, done) {
  say("action-error", "");
  say("action-notice", "");
  button.disabled = true;
  try {
    const answer = await call(path, body);
    say("action-notice", answer.not_in_force ? `Stored, but not yet in force everywhere: ${answer.not_in_force}` : done);
    await refresh();
  } catch (error) {
    if (error.status === 401) signedOut();
    say("action-error", error.message);
  } finally {
    button.disabled = false;
  }
}

function drawInspection(result) {
  const rows = [
    ["Verdict", result.verdict + (result.reason ? ` (${result.reason})` : "")],
    ["Why", result.explanation],
  ];
  if (result.key_id !== undefined) {
    rows.push(
      ["Cookie", result.cookie_name || "—"],
      ["Listener", `${result.load_balancer} port ${result.port}`],
      ["Target", result.target],
      ["Key id", String(result.key_id)],
      ["Issued", time(result.issued_at)],
      ["Expires", result.expires_at ? time(result.expires_at) : "with the browser session"],
      ["Session started", time(result.session_start)]);
  }
  document.getElementById("inspection").replaceChildren(...rows.flatMap(([term, value]) => [
    el("dt", { text: term }), el("dd", { "data-field": term.toLowerCase().replace(/ /g, "-"), text: value })]));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    say("login-error", "");
    try {
      await call("/ui/api/login", {
        access_key_id: document.getElementById("access-key-id").value.trim(),
        secret_access_key: document.getElementById("secret-access-key").value,
      });
      document.getElementById("secret-access-key").value = "";
      start();
    } catch (error) {
      say("login-error", error.message);
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await call("/ui/api/logout", {}); } finally { signedOut(); }
  });
  document.getElementById("inspect").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      drawInspection(await call("/ui/api/inspect", { cookie: document.getElementById("cookie-text").value }));
    } catch (error) {
      if (error.status === 401) signedOut();
      say("action-error", error.message);
    }
  });
  start();
});

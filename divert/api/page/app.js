// divert's self-care page: plain JavaScript over the portal API (/api/v1),
// nothing fetched from elsewhere.  The credentials live in this tab's
// sessionStorage only, and go to the API in the Authorization header.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
let vocabulary = null;

function credentials() {
  return sessionStorage.getItem("divert-auth");
}

async function api(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: Object.assign(
      { Authorization: credentials() || "" },
      body === undefined ? {} : { "Content-Type": "application/json" }
    ),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && path !== "/me") {
    signOut("Signed out: " + (await response.json()).error);
    throw new Error("signed out");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({ error: response.status + " " + response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- signing in -------------------------------------------------------------------

async function signIn(header) {
  sessionStorage.setItem("divert-auth", header);
  try {
    const me = await api("GET", "/me");
    show(me);
  } catch (error) {
    sessionStorage.removeItem("divert-auth");
    $("sign-in-error").textContent = error.message;
  }
}

function signOut(message) {
  sessionStorage.removeItem("divert-auth");
  $("sign-in-view").hidden = false;
  $("forwards-view").hidden = $("explain-view").hidden = $("who").hidden = true;
  $("sign-in-error").textContent = message || "";
}

async function show(me) {
  $("sign-in-error").textContent = "";
  $("sign-in-view").hidden = true;
  $("forwards-view").hidden = $("explain-view").hidden = $("who").hidden = false;
  $("who-name").textContent = me.name;
  vocabulary = await api("GET", "/vocabulary");
  fill($("add-when"), vocabulary.conditions);
  fill($("add-callers"), vocabulary.callers);
  const owners = me.owners.map((o) => [JSON.stringify(o), o.label]);
  fill($("add-owner"), owners);
  fill($("explain-number"), me.owners.filter((o) => o.number).map((o) => [o.number, o.label]));
  await listForwards();
}

function fill(select, options) {
  select.replaceChildren(
    ...options.map((o) => (Array.isArray(o) ? element("option", { value: o[0] }, o[1]) : element("option", { value: o }, o)))
  );
}

// -- forwards ---------------------------------------------------------------------

async function listForwards() {
  const rows = await api("GET", "/forwards");
  const body = $("forwards").tBodies[0];
  body.replaceChildren(
    ...rows.map((f) =>
      element(
        "tr",
        { class: f.kind, "data-id": f.id === null ? "" : String(f.id) },
        element("td", {}, element("span", { class: "badge " + f.kind }, f.kind)),
        element("td", {}, f.kind === "emergency" ? "trunk " + f.trunk : f.number || "subscriber " + f.subscriber),
        element("td", {}, f.when + (f.until ? " until " + f.until : "") + (f.modes ? " (" + f.modes + ")" : "")),
        element("td", {}, f.callers),
        element("td", { class: "to" }, f.to),
        element("td", {}, f.timeout ? f.timeout + " s" : ""),
        element("td", {}, f.order === null ? "" : String(f.order)),
        element(
          "td",
          {},
          ...(f.kind === "forward"
            ? [
                element("button", { type: "button", class: "edit", onclick: () => edit(f) }, "Change"),
                element("button", { type: "button", class: "delete", onclick: () => remove(f) }, "Delete"),
              ]
            : [element("span", { class: "hint" }, "set on the trunk")])
        )
      )
    )
  );
  $("forwards-empty").hidden = rows.length > 0;
}

async function addForward(event) {
  event.preventDefault();
  $("add-error").textContent = "";
  const owner = JSON.parse($("add-owner").value);
  const body = {
    when: $("add-when").value,
    to: $("add-to").value,
    callers: $("add-callers").value,
    tenant: owner.tenant,
  };
  if (owner.number) body.number = owner.number;
  else body.subscriber = owner.subscriber;
  if ($("add-timeout").value) body.timeout = Number($("add-timeout").value);
  try {
    await api("POST", "/forwards", body);
    $("add-to").value = $("add-timeout").value = "";
    await listForwards();
  } catch (error) {
    $("add-error").textContent = error.message;
  }
}

function edit(forward) {
  $("edit-id").textContent = forward.id;
  $("edit-to").value = forward.to;
  $("edit-timeout").value = forward.timeout || "";
  $("edit-error").textContent = "";
  $("edit-dialog").dataset.id = forward.id;
  $("edit-dialog").showModal();
}

async function saveEdit(event) {
  event.preventDefault();
  const body = { to: $("edit-to").value };
  if ($("edit-timeout").value) body.timeout = Number($("edit-timeout").value);
  try {
    await api("PATCH", "/forwards/" + $("edit-dialog").dataset.id, body);
    $("edit-dialog").close();
    await listForwards();
  } catch (error) {
    $("edit-error").textContent = error.message;
  }
}

async function remove(forward) {
  if (!confirm("Delete forward " + forward.id + " (" + forward.when + " to " + forward.to + ")?")) return;
  try {
    await api("DELETE", "/forwards/" + forward.id);
  } catch (error) {
    alert(error.message);
  }
  await listForwards();
}

// -- explain: the chain, drawn -----------------------------------------------------

function addAfter() {
  const select = element("select", { class: "after" });
  fill(select, vocabulary.outcomes);
  $("explain-after").append(element("label", {}, "then the step ends ", select));
}

async function explainCall(event) {
  event.preventDefault();
  $("explain-error").textContent = "";
  const query = new URLSearchParams({ number: $("explain-number").value });
  if ($("explain-from").value) query.set("from", $("explain-from").value);
  for (const select of document.querySelectorAll("#explain-after select")) query.append("after", select.value);
  try {
    draw(await api("GET", "/explain?" + query));
  } catch (error) {
    $("explain-error").textContent = error.message;
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function draw(chain) {
  const box = { width: 262, height: 96, gap: 70 };
  const chart = $("chain");
  const steps = chain.steps;
  const width = 20 + (box.width + box.gap) * (steps.length + 1);
  chart.setAttribute("width", width);
  chart.setAttribute("height", box.height + 60);
  chart.setAttribute("viewBox", "0 0 " + width + " " + (box.height + 60));
  chart.replaceChildren(
    svg("defs", {}),
    svg("text", { x: 10, y: 18, class: "caption" }, "call to " + chain.called + " from " + chain.caller + (chain.mode ? ", mode " + chain.mode : ""))
  );
  chart.firstChild.append(
    Object.assign(svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto" }), {})
  );
  chart.firstChild.firstChild.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
  let x = 10;
  const y = 34;
  const start = svg("g", { class: "step caller" });
  start.append(svg("rect", { x, y, width: box.width * 0.5, height: box.height, rx: 10 }));
  start.append(svg("text", { x: x + 12, y: y + 30 }, "caller"));
  start.append(svg("text", { x: x + 12, y: y + 52, class: "small" }, chain.internal ? "internal" : "external"));
  chart.append(start);
  x += box.width * 0.5;
  steps.forEach((step, index) => {
    const label = step.after ? "if " + step.after : "calls";
    chart.append(svg("line", { x1: x, y1: y + box.height / 2, x2: x + box.gap, y2: y + box.height / 2, "marker-end": "url(#arrow)", class: "edge" }));
    chart.append(svg("text", { x: x + 6, y: y + box.height / 2 - 8, class: "small" }, label));
    x += box.gap;
    const group = svg("g", { class: "step " + (step.reply ? "reply" : "relay"), "data-step": index + 1 });
    group.append(svg("rect", { x, y, width: box.width, height: box.height, rx: 10 }));
    if (step.reply) {
      group.append(svg("text", { x: x + 12, y: y + 30 }, "ends: " + step.reply.code));
      group.append(svg("text", { x: x + 12, y: y + 52, class: "small" }, step.reply.reason));
    } else {
      const relay = step.relay;
      const where = relay.endpoint.kind === "trunk" ? "trunk " + (chain.trunks[relay.endpoint.ref] || relay.endpoint.ref) : relay.endpoint.kind;
      group.append(svg("text", { x: x + 12, y: y + 26 }, "rings " + relay.target));
      group.append(svg("text", { x: x + 12, y: y + 46, class: "small" }, "at " + where));
      group.append(svg("text", { x: x + 12, y: y + 64, class: "small" }, relay.ring_timeout ? "for " + relay.ring_timeout + " s" : "for " + chain.default_ring_timeout + " s (the node's default)"));
      if (relay.diversions.length) {
        const last = relay.diversions[relay.diversions.length - 1];
        group.append(svg("text", { x: x + 12, y: y + 82, class: "small" }, "diverted from " + last.from + " (" + last.reason + ")"));
      }
    }
    chart.append(group);
    x += box.width;
  });
}

// -- wiring --------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-token").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn("Bearer " + $("token").value.trim());
    $("token").value = "";
  });
  $("sign-in-sip").addEventListener("submit", (event) => {
    event.preventDefault();
    const pair = $("sip-user").value.trim() + ":" + $("sip-password").value;
    signIn("Basic " + btoa(unescape(encodeURIComponent(pair))));
    $("sip-password").value = "";
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("add-forward").addEventListener("submit", addForward);
  $("edit-forward").addEventListener("submit", saveEdit);
  $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
  $("explain").addEventListener("submit", explainCall);
  $("explain-more").addEventListener("click", addAfter);
  if (credentials()) {
    api("GET", "/me").then(show, () => signOut());
  }
});

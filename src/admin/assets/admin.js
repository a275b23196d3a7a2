// The wsgate admin page. The admin token lives only in the `token` variable
// below: never in a URL, a cookie or web storage, so reloading the page or
// closing the tab forgets it. Every value from the API reaches the page as
// text (textContent), never as HTML.
"use strict";

let token = null;
let timer = null;
let sessions = [];
const REFRESH_MS = 2000;

const OUTCOME_COLORS = {
  ok: "#2e9e5b", unauthorized: "#e0a800", forbidden: "#e07b00", not_found: "#8e8e8e",
  rate_limited: "#8e44ad", upstream_error: "#c0392b", bad_request: "#5d6d7e",
};
const CLOSE_COLORS = {
  client: "#2e9e5b", upstream: "#27ae60", expired: "#e0a800", revoked: "#c0392b",
  terminated: "#8e44ad", policy: "#e07b00", idle: "#95a5a6", too_big: "#d35400",
  shutdown: "#34495e", upstream_lost: "#e74c3c", unresponsive: "#7f8c8d", other: "#bdc3c7",
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + token }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) {
    const msg = (data && data.error) || text.trim() || r.statusText;
    throw new ApiError(r.status, msg);
  }
  return data;
}

// ---------------------------------------------------------------- formatting

function duration(s) {
  if (s === null || s === undefined) return "—";
  const neg = s < 0;
  s = Math.abs(Math.round(s));
  let out;
  if (s < 60) out = s + "s";
  else if (s < 3600) out = Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  else if (s < 86400) out = Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  else out = Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h";
  return neg ? "-" + out : out;
}

function ago(unix) {
  if (!unix) return "—";
  return duration(Date.now() / 1000 - unix) + " ago";
}

function inTime(unix) {
  if (!unix) return "—";
  return "in " + duration(unix - Date.now() / 1000);
}

function bytes(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n, i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return v.toFixed(v < 10 ? 1 : 0) + " " + units[i];
}

function notice(text, isError) {
  const n = $("notice");
  n.textContent = text;
  n.className = isError ? "error" : "";
}

// ---------------------------------------------------------------- confirmation

let pending = null;

function ask(text, input, action) {
  pending = action;
  $("confirm-text").textContent = text;
  const i = $("confirm-input");
  i.hidden = !input;
  i.value = "";
  if (input) i.placeholder = input;
  $("confirm").hidden = false;
  (input ? i : $("confirm-ok")).focus();
}

function closeConfirm() {
  $("confirm").hidden = true;
  pending = null;
}

async function confirmed() {
  const action = pending;
  const value = $("confirm-input").value.trim();
  closeConfirm();
  if (!action) return;
  try {
    notice(await action(value), false);
  } catch (e) {
    notice(e.message, true);
  }
  refresh();
}

// ---------------------------------------------------------------- actions

function terminate(s) {
  ask(`Terminate session ${s.id} (${s.sub || "anonymous"} on ${s.route})? The client gets 4403 "session terminated".`,
    null, async () => {
      await api("DELETE", "/admin/sessions/" + encodeURIComponent(s.id));
      return `Session ${s.id} terminated.`;
    });
}

function revokeSubject(s) {
  ask(`Revoke every token of subject "${s.sub}" issued by ${s.iss || "any issuer"} until now? Its sessions close with 4403.`,
    null, async () => {
      const body = { sub: s.sub };
      if (s.iss) body.iss = s.iss;
      const r = await api("POST", "/admin/revocations", body);
      return `Subject "${s.sub}" revoked; ${r.closed} session(s) closed.`;
    });
}

function revokeJti(jti) {
  const run = async (value) => {
    const j = jti || value;
    if (!j) throw new Error("no jti given");
    const r = await api("POST", "/admin/revocations", { jti: j });
    return `Token ${j} revoked; ${r.closed} session(s) closed.`;
  };
  if (jti) ask(`Revoke the token with jti "${jti}"? Its sessions close with 4403.`, null, run);
  else ask("Revoke a token by its jti:", "jti", run);
}

async function reloadConfig() {
  notice("Reloading…", false);
  try {
    const r = await api("POST", "/admin/reload");
    notice("Config reloaded: " + r.summary, false);
  } catch (e) {
    notice("Reload refused, the previous config stays in force:\n" + e.message, true);
  }
  refresh();
}

// ---------------------------------------------------------------- rendering

function matches(s, q) {
  if (!q) return true;
  return [s.id, s.route, s.sub, s.iss, s.issuer_id, s.jti, s.remote_addr]
    .some((v) => v && String(v).toLowerCase().includes(q));
}

function renderSessions() {
  const q = $("search").value.trim().toLowerCase();
  const body = $("sessions").tBodies[0];
  const shown = sessions.filter((s) => matches(s, q));
  $("session-count").textContent = q ? `(${shown.length} of ${sessions.length})` : `(${sessions.length})`;
  const rows = shown.map((s) => {
    const tr = el("tr");
    tr.dataset.id = s.id;
    tr.append(el("td", s.id, "num"), el("td", s.route), el("td", s.sub ?? "—"),
      el("td", s.iss ?? s.issuer_id ?? "—"), el("td", s.remote_addr),
      el("td", duration(s.age_seconds), "num"),
      el("td", s.expires_in_seconds === null || s.expires_in_seconds === undefined ? "never" : duration(s.expires_in_seconds), "num"),
      el("td", `${s.messages_to_upstream ?? 0} / ${s.messages_to_client ?? 0}`, "num"),
      el("td", `${bytes(s.bytes_to_upstream ?? 0)} / ${bytes(s.bytes_to_client ?? 0)}`, "num"));
    const actions = el("td");
    const kill = el("button", "terminate", "small terminate");
    kill.type = "button";
    kill.addEventListener("click", () => terminate(s));
    actions.append(kill);
    if (s.sub) {
      const rs = el("button", "revoke subject", "small revoke-subject");
      rs.type = "button";
      rs.addEventListener("click", () => revokeSubject(s));
      actions.append(rs);
    }
    if (s.jti) {
      const rj = el("button", "revoke token", "small revoke-jti");
      rj.type = "button";
      rj.addEventListener("click", () => revokeJti(s.jti));
      actions.append(rj);
    }
    tr.append(actions);
    return tr;
  });
  if (rows.length === 0) {
    const td = el("td", sessions.length ? "no session matches" : "no live sessions", "empty");
    td.colSpan = 10;
    rows.push(el("tr"));
    rows[0].append(td);
  }
  body.replaceChildren(...rows);
}

function renderIssuers(list) {
  const rows = list.map((i) => {
    const tr = el("tr");
    const kids = i.kids.length ? i.kids.map((k) => k ?? "(no kid)").join(", ") : "none";
    const remote = i.source !== "local";
    tr.append(el("td", i.id), el("td", i.source), el("td", kids),
      el("td", ago(i.loaded_at)), el("td", remote ? ago(i.last_attempt) : "—"),
      el("td", remote ? inTime(i.next_refresh) : "—"),
      el("td", remote ? `${i.fetches_ok} / ${i.fetches_failed}` : "—", "num"),
      el("td", i.last_error ?? "", i.last_error ? "error" : ""));
    return tr;
  });
  $("issuers").tBodies[0].replaceChildren(...rows);
}

function selectorText(r) {
  if (r.jti) return "jti " + r.jti;
  if (r.sub) return "sub " + r.sub + (r.iss ? " (iss " + r.iss + ")" : "");
  if (r.claim) return "claim " + r.claim + " = " + r.value;
  return JSON.stringify(r);
}

function renderRevocations(list) {
  const rows = list.map((r) => {
    const tr = el("tr");
    tr.append(el("td", selectorText(r)), el("td", ago(r.revoked_at)), el("td", inTime(r.keep_until)));
    return tr;
  });
  if (rows.length === 0) {
    const td = el("td", "none", "empty");
    td.colSpan = 3;
    rows.push(el("tr"));
    rows[0].append(td);
  }
  $("revocations").tBodies[0].replaceChildren(...rows);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

// Stacked bars, one per bucket; keys in the order of `colors`.
function renderChart(svgId, legendId, buckets, field, colors) {
  const chart = $(svgId);
  // Drawn in the element's own pixels, so bars fill its width and text is not stretched.
  const W = Math.max(200, Math.round(chart.getBoundingClientRect().width) || 360);
  const H = 120, top = 12, bottom = 16;
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const totals = buckets.map((b) => Object.values(b[field]).reduce((a, v) => a + v, 0));
  const max = Math.max(1, ...totals);
  const bw = W / buckets.length;
  const parts = [];
  buckets.forEach((b, i) => {
    let y = H - bottom;
    for (const [key, color] of Object.entries(colors)) {
      const v = b[field][key] || 0;
      if (!v) continue;
      const h = (v / max) * (H - top - bottom);
      y -= h;
      const r = svg("rect", { x: i * bw + 1, y, width: Math.max(1, bw - 2), height: h, fill: color });
      const t = svg("title", {});
      t.textContent = `${key}: ${v}`;
      r.append(t);
      parts.push(r);
    }
  });
  parts.push(svg("line", { x1: 0, y1: H - bottom, x2: W, y2: H - bottom, stroke: "#bbb" }));
  const label = svg("text", { x: 2, y: 10, "font-size": 10, fill: "#6b7480" });
  label.textContent = "max " + max + " / 10 s";
  parts.push(label);
  const minutes = svg("text", { x: 2, y: H - 3, "font-size": 10, fill: "#6b7480" });
  minutes.textContent = "-" + Math.round(buckets.length * 10 / 60) + " min";
  const now = svg("text", { x: W - 22, y: H - 3, "font-size": 10, fill: "#6b7480" });
  now.textContent = "now";
  parts.push(minutes, now);
  chart.replaceChildren(...parts);

  const seen = new Set();
  buckets.forEach((b) => Object.keys(b[field]).forEach((k) => seen.add(k)));
  const legend = [...Object.keys(colors)].filter((k) => seen.has(k)).map((k) => {
    const item = el("span");
    const sw = el("span", null, "swatch");
    sw.style.background = colors[k];
    const sum = buckets.reduce((a, b) => a + (b[field][k] || 0), 0);
    item.append(sw, document.createTextNode(`${k} ${sum}`));
    return item;
  });
  if (legend.length === 0) legend.push(el("span", "nothing in the last minutes"));
  $(legendId).replaceChildren(...legend);
}

// ---------------------------------------------------------------- refresh loop

async function refresh() {
  if (!token) return;
  try {
    const [s, h, i, r] = await Promise.all([
      api("GET", "/admin/sessions"), api("GET", "/admin/history"),
      api("GET", "/admin/issuers"), api("GET", "/admin/revocations"),
    ]);
    sessions = s;
    renderSessions();
    renderChart("chart-handshakes", "legend-handshakes", h.buckets, "handshakes", OUTCOME_COLORS);
    renderChart("chart-closes", "legend-closes", h.buckets, "closes", CLOSE_COLORS);
    renderIssuers(i);
    renderRevocations(r);
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "yes";
  } catch (e) {
    if (e.status === 401) {
      logout("The admin token was refused.");
      return;
    }
    $("status").textContent = "update failed: " + e.message;
  }
}

async function login(ev) {
  ev.preventDefault();
  const input = $("token");
  token = input.value;
  input.value = "";
  $("login-error").textContent = "";
  try {
    await api("GET", "/admin/sessions");
  } catch (e) {
    logout(e.status === 401 ? "The admin token was refused." : "Cannot reach the admin API: " + e.message);
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("reload").hidden = false;
  $("logout").hidden = false;
  await refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function logout(why) {
  token = null;
  if (timer) clearInterval(timer);
  timer = null;
  sessions = [];
  delete document.body.dataset.loaded;
  $("app").hidden = true;
  $("reload").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("status").textContent = "";
  $("login-error").textContent = why || "";
  $("token").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout(""));
  $("reload").addEventListener("click", reloadConfig);
  $("search").addEventListener("input", renderSessions);
  $("revoke-jti-open").addEventListener("click", () => revokeJti(null));
  $("confirm-ok").addEventListener("click", confirmed);
  $("confirm-cancel").addEventListener("click", closeConfirm);
  $("confirm-input").addEventListener("keydown", (e) => { if (e.key === "Enter") confirmed(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeConfirm(); });
  $("token").focus();
});

// The DIPS dashboard: reads /api/events (server-sent events, one fleet map per poll) and
// draws it. No libraries; the charts are small canvases drawn here.
"use strict";

const HISTORY = 120; // points kept per service (about two minutes at one a second)
const history = new Map(); // service -> [{rate, err, p99, queue}]
const cards = new Map(); // service -> card element
const VERSION_COLOURS = ["var(--accent)", "var(--warn)", "var(--busy)", "var(--ok)", "var(--bad)"];
let lastUpdate = 0;

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

function fmtRate(x) {
  if (x === null || x === undefined) return "–";
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}
function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
  return s.toFixed(2) + " s";
}
function fmtUptime(s) {
  if (!s && s !== 0) return "–";
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return (s / 60).toFixed(0) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}
function shortBroker(ep) { return ep.replace(/^tcp:\/\//, ""); }

// --- theme ----------------------------------------------------------------------------
function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  for (const card of cards.values()) card.dirty = true;
}
$("theme").addEventListener("click", () => {
  const dark = getComputedStyle(document.documentElement).getPropertyValue("--bg").trim() === "#0f1419";
  const next = dark ? "light" : "dark";
  try { localStorage.setItem("dips-theme", next); } catch (e) { /* private mode */ }
  applyTheme(next);
  redrawCharts();
});
try { applyTheme(localStorage.getItem("dips-theme")); } catch (e) { /* private mode */ }

// --- charts ---------------------------------------------------------------------------
function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function drawSpark(canvas, points) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = cssVar("--line"); ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(0, h - 0.5); ctx.lineTo(w, h - 0.5); ctx.stroke();
  if (points.length < 2) return;
  const max = Math.max(1, ...points.map((p) => p.rate), ...points.map((p) => p.err));
  const x = (i) => w - (points.length - 1 - i) * (w / (HISTORY - 1));
  const y = (v) => h - 2 - (v / max) * (h - 6);
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(i), y(p.rate)) : ctx.moveTo(x(i), y(p.rate))));
  ctx.strokeStyle = cssVar("--chart"); ctx.lineWidth = 1.5; ctx.stroke();
  ctx.lineTo(x(points.length - 1), h); ctx.lineTo(x(0), h); ctx.closePath();
  ctx.fillStyle = cssVar("--chart-fill"); ctx.fill();
  if (points.some((p) => p.err > 0)) {
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(x(i), y(p.err)) : ctx.moveTo(x(i), y(p.err))));
    ctx.strokeStyle = cssVar("--bad"); ctx.lineWidth = 1.5; ctx.stroke();
  }
  ctx.fillStyle = cssVar("--muted"); ctx.font = "10px system-ui, sans-serif";
  ctx.fillText(fmtRate(max) + "/s", 2, 10);
}
function redrawCharts() {
  for (const [name, card] of cards) drawSpark(card.querySelector("canvas"), history.get(name) || []);
}
window.addEventListener("resize", redrawCharts);

// --- sections -------------------------------------------------------------------------
function renderHeader(state) {
  const t = state.totals, n = state.brokers.length;
  const health = $("health");
  if (t.brokers_up === 0) { health.className = "pill bad"; health.textContent = "NO BROKER ANSWERS"; }
  else if (t.brokers_up < n) { health.className = "pill bad"; health.textContent = `${n - t.brokers_up} of ${n} brokers down`; }
  else if (t.error_rate > 0) { health.className = "pill warn"; health.textContent = "errors"; }
  else { health.className = "pill ok"; health.textContent = n === 1 ? "the broker is up" : `all ${n} brokers up`; }
  $("totals").innerHTML =
    `<span><b id="total-rate">${fmtRate(t.rate)}</b> replies/s</span>` +
    `<span title="the fleet's faults: failed workers, deadlines, full queues"><b>${fmtRate(t.error_rate)}</b> errors/s</span>` +
    `<span class="muted" title="the callers' mistakes (bad requests, refused sources): not the fleet's fault"><b>${fmtRate(t.refused_rate || 0)}</b> refused/s</span>` +
    `<span><b>${t.queue}</b> queued</span>` +
    `<span><b>${t.busy}</b>/${t.workers} workers busy</span>` +
    `<span title="identical requests the brokers rendered once (since they started)"><b id="total-coalesced">${t.coalesced || 0}</b> coalesced</span>` +
    `<span title="requests given up after they killed or froze the workers that ran them"${t.poisoned ? ' class="bad"' : ""}><b id="total-poisoned">${t.poisoned || 0}</b> poisoned</span>` +
    renderImages((state.gateway || {}).images);
  $("clock").textContent = new Date(state.time * 1000).toLocaleTimeString();
  const g = state.gateway || {};
  $("gateway").textContent = `mdp-http ${g.version || ""} · ${g.backend || ""} client · ${g.in_flight || 0} API requests in flight`;
}

function renderImages(images) {
  if (!images || !(images.hits + images.misses + images.not_modified)) return "";
  const asked = images.hits + images.misses;
  const ratio = asked ? Math.round(100 * images.hits / asked) : 0;
  return `<span id="images" title="image URLs at this door: cache hits, misses, 304s, renders sent to the fleet, requests that waited for an identical one here, cached results past their TTL whose source the workers checked">` +
    `images <b id="image-hits">${images.hits}</b> hits (${ratio}%) · <b>${images.misses}</b> misses · ` +
    `<b>${images.not_modified}</b> 304 · <b>${images.renders}</b> renders · <b>${images.coalesced}</b> coalesced here` +
    (images.revalidated ? ` · <b>${images.revalidated}</b> revalidated` : "") +
    (images.damaged ? ` · <b>${images.damaged}</b> damaged sources rendered` : "") +
    (images.origin_timeouts ? ` · <b>${images.origin_timeouts}</b> source timeouts` : "") +
    (images.origin_refused ? ` · <b>${images.origin_refused}</b> refused for a slow or busy origin` +
      (images.origins_held ? ` (<b>${images.origins_held}</b> held now)` : "") : "") +
    (images.shared_cache ? ` · redis ${esc(images.shared_cache)}` : "") + `</span>`;
}

function renderBrokers(state) {
  $("brokers").innerHTML = state.brokers.map((b) => b.up
    ? `<div class="broker" data-broker="${esc(b.endpoint)}"><div class="ep">${esc(shortBroker(b.endpoint))}</div>` +
      `<div><span class="chip idle">up</span> <span class="ver">${esc(b.version)}</span></div>` +
      `<div class="muted small">${esc(b.host)} · pid ${b.pid} · up ${fmtUptime(b.uptime_s)}</div></div>`
    : `<div class="broker down" data-broker="${esc(b.endpoint)}"><div class="ep">${esc(shortBroker(b.endpoint))}</div>` +
      `<div><span class="chip draining" style="color:var(--bad)">DOWN</span></div>` +
      `<div class="muted small">${esc(b.error).slice(0, 120)}</div></div>`).join("");
}

function serviceCard(name) {
  const card = document.createElement("div");
  card.className = "svc";
  card.dataset.service = name;
  card.innerHTML =
    `<div class="head"><span class="name">${esc(name)}</span><span class="rate"><span class="v">–</span> <small>/s</small></span></div>` +
    `<canvas></canvas>` +
    `<div class="stats"><div>p50<b class="p50">–</b></div><div>p99<b class="p99">–</b></div>` +
    `<div class="q">queue<b class="queue">0</b></div><div class="e">err/s<b class="err">0</b></div></div>` +
    `<div class="muted small workers"></div><div class="codes"></div>`;
  return card;
}

function renderServices(state) {
  const grid = $("services");
  const seen = new Set();
  for (const s of state.services) {
    seen.add(s.name);
    let card = cards.get(s.name);
    if (!card) { card = serviceCard(s.name); cards.set(s.name, card); grid.appendChild(card); }
    const h = history.get(s.name) || [];
    if (state.interval_s > 0) h.push({rate: s.rate, err: s.error_rate, p99: s.p99, queue: s.queue});
    while (h.length > HISTORY) h.shift();
    history.set(s.name, h);
    card.querySelector(".v").textContent = fmtRate(s.rate);
    card.querySelector(".p50").textContent = fmtSeconds(s.p50);
    card.querySelector(".p99").textContent = fmtSeconds(s.p99);
    card.querySelector(".queue").textContent = s.queue;
    card.querySelector(".err").textContent = fmtRate(s.error_rate);
    card.querySelector(".q").className = s.queue > 0 ? "q warn" : "q";
    card.querySelector(".e").className = s.error_rate > 0 ? "e bad" : "e";
    card.classList.toggle("erring", s.error_rate > 0);
    card.classList.toggle("queued", s.queue > 0 && !(s.error_rate > 0));
    const w = s.workers || {};
    card.querySelector(".workers").textContent =
      `${w.idle || 0} idle · ${w.busy || 0} busy` + (w.away ? ` · ${w.away} away` : "") +
      (w.draining ? ` · ${w.draining} draining` : "") +
      (s.queue_p99 !== null ? ` · queue p99 ${fmtSeconds(s.queue_p99)}` : "");
    const codes = Object.entries(s.errors || {}).filter(([, n]) => n > 0);
    card.querySelector(".codes").textContent = codes.map(([c, n]) => `${c} ${n}`).join(" · ");
    drawSpark(card.querySelector("canvas"), h);
  }
  for (const [name, card] of cards) {
    if (!seen.has(name)) { card.remove(); cards.delete(name); history.delete(name); }
  }
}

function renderRollout(state) {
  const r = state.rollout, box = $("rollout");
  if (!r.in_progress) { box.hidden = true; return; }
  const total = Object.values(r.versions).reduce((a, b) => a + b, 0);
  const parts = Object.entries(r.versions);
  box.hidden = false;
  box.innerHTML = `<b>Rollout in progress:</b> ${parts.length} code versions among ${total} workers — ` +
    parts.map(([v, n], i) => `<span class="ver" style="color:${VERSION_COLOURS[i % 5]}">${esc(v)}</span> ×${n}`).join(", ") +
    `<div class="bar">${parts.map(([, n], i) => `<span style="width:${(100 * n / total).toFixed(1)}%;background:${VERSION_COLOURS[i % 5]}"></span>`).join("")}</div>`;
}

function renderHosts(state) {
  const major = Object.keys(state.rollout.versions)[0];
  $("worker-count").textContent = `${state.totals.workers} on ${state.hosts.length} host(s)`;
  $("hosts").innerHTML = state.hosts.map((host) =>
    `<div class="host"><h3>${esc(host.host)} <span class="muted small">${host.workers.length} workers</span></h3>` +
    `<table><thead><tr><th>service</th><th>pid</th><th>state</th><th>busy for</th><th class="num">served</th>` +
    `<th class="num hide-sm">failures</th><th>version</th><th class="hide-sm">up</th></tr></thead><tbody>` +
    host.workers.map((w) =>
      `<tr data-worker="${esc(w.service)}:${w.pid}"><td>${esc(w.service)}</td><td>${w.pid}</td>` +
      `<td><span class="chip ${esc(w.state)}">${esc(w.state)}</span></td>` +
      `<td>${w.busy_for.map((b) => esc(shortBroker(b))).join(", ") || '<span class="muted">–</span>'}</td>` +
      `<td class="num served">${w.served}</td><td class="num hide-sm">${w.failures === null ? "–" : w.failures}</td>` +
      `<td><span class="ver ${w.version !== major ? "odd" : ""}">${esc(w.version || "?")}</span></td>` +
      `<td class="muted hide-sm">${fmtUptime(w.uptime_s)}</td></tr>`).join("") +
    `</tbody></table></div>`).join("");
}

function render(state) {
  lastUpdate = Date.now();
  $("live").classList.remove("stale");
  renderHeader(state);
  renderRollout(state);
  renderBrokers(state);
  renderServices(state);
  renderHosts(state);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

// --- updates --------------------------------------------------------------------------
function connect() {
  const source = new EventSource("/api/events");
  source.onmessage = (event) => {
    let state;
    try { state = JSON.parse(event.data); } catch (e) { return; }
    render(state);
  };
  source.onerror = () => { $("live").classList.add("stale"); };
}
setInterval(() => {
  if (Date.now() - lastUpdate > 5000) {
    $("live").classList.add("stale");
    const health = $("health");
    if (lastUpdate) { health.className = "pill bad"; health.textContent = "gateway not answering"; }
  }
}, 1000);
connect();

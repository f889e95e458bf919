// fusionwatch calls page (call-centre profile): calls live and recent, one call's transcript by
// speaker with per-turn sentiment, its frustration curve and escalations with clip links, and
// full-text search over transcripts. Plain browser JavaScript, no build step; every value from the
// API is inserted with textContent (never innerHTML), so transcripts cannot inject markup.
"use strict";

const state = { calls: [], current: null, highlight: null, words: [] };
const REFRESH_MS = 5000;

// ---- helpers (the shared ones are in common.js) -----------------------------------------------------

// position in the call, m:ss
const offset = (iso, startIso) => {
  const s = Math.max(0, Math.round((Date.parse(iso) - Date.parse(startIso)) / 1000));
  return Math.floor(s / 60) + ":" + pad(s % 60);
};
const pct = (v) => Math.round(v * 100) + " %";
const status = (text) => { $("live").textContent = text; };

// text with the searched words marked, built from text nodes only
function marked(text, words) {
  const span = el("span");
  if (!words.length) { span.textContent = text; return span; }
  // the databases stem words ("arriving" finds "arrived"): mark words that share the stem
  const stem = (w) => (w.length > 4 ? w.replace(/(ing|ed|es|e|s)$/, "") : w);
  const escaped = words.map((w) => stem(w).replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp("\\b(" + escaped.join("|") + ")\\w*", "gi");
  let last = 0;
  for (const m of text.matchAll(re)) {
    span.append(text.slice(last, m.index), el("mark", {}, m[0]));
    last = m.index + m[0].length;
  }
  span.append(text.slice(last));
  return span;
}

// ---- calls list --------------------------------------------------------------------------------------

function callBadges(c) {
  const out = [];
  if (c.live) out.push(el("span", { class: "badge live" }, "live"));
  if (c.escalation_open) out.push(el("span", { class: "badge open" }, "escalation open"));
  else if (c.escalations) out.push(el("span", { class: "badge escalated" }, c.escalations === 1 ? "escalated" : c.escalations + " escalations"));
  return out;
}

async function loadCalls() {
  const page = await api("/api/calls?state=" + encodeURIComponent($("f-state").value) + "&limit=200");
  state.calls = page.items;
  $("calls-count").textContent = "(" + page.total + ")";
  $("calls-empty").hidden = page.items.length > 0;
  const ul = $("calls");
  ul.replaceChildren(...page.items.map((c) => {
    const mood = c.now ? "frustration " + pct(c.now.frustration) : "not scored yet";
    const b = el("button", { type: "button", "data-id": c.call_id,
                             "aria-current": state.current && state.current.call_id === c.call_id ? "true" : "false" },
                 el("strong", {}, c.call_id), " ", ...callBadges(c),
                 el("span", { class: "when" }, fmtTime(c.start_time) + " · " + (c.overall || "—") + " · " + mood));
    b.addEventListener("click", () => openCall(c.call_id));
    return el("li", {}, b);
  }));
  const live = page.items.filter((c) => c.live).length;
  status(live + " live · updated " + fmtClock(Date.now()));
}

// ---- one call ----------------------------------------------------------------------------------------

async function openCall(id, turnId = null) {
  const call = await api("/api/calls/" + encodeURIComponent(id));
  state.current = call;
  state.highlight = turnId;
  for (const b of document.querySelectorAll("#calls button")) b.setAttribute("aria-current", String(b.dataset.id === id));
  $("placeholder").hidden = true;
  $("call").hidden = false;
  showCall(call);
}

function showCall(c) {
  $("call-title").textContent = c.call_id + (c.live ? " (live)" : "");
  $("call-meta").textContent = "from " + fmtTime(c.start_time) + " to " + fmtTime(c.end_time) + " · " +
    c.turns + " turns · peak frustration " + (c.peak_frustration === null ? "—" : pct(c.peak_frustration)) +
    (c.peak_time ? " at " + fmtClock(c.peak_time) : "");
  $("call-mood").textContent = "Customer " + (c.live ? "now: " : "at the end: ") + (c.overall || "not scored yet") +
    (c.turning_point ? " · turned at " + fmtClock(c.turning_point) : "");
  drawCurve(c);
  showEscalations(c);
  showTranscript(c);
}

function drawCurve(c) {
  const s = $("curve");
  const { W, H, L, R, T, B } = chartFrame(s, 36);
  // heard: false where a stereo call's window did not hear the customer (the escalation does not count it)
  const pts = c.curve.map((p) => ({ t: Date.parse(p.time), v: p.frustration, heard: p.customer_heard !== false }));
  if (!pts.length) {
    s.append(svg("text", { x: 20, y: 75 }, "no window scored yet"));
    $("curve-desc").textContent = "The monitor has scored no window of this call yet.";
    return;
  }
  const t0 = Math.min(pts[0].t, Date.parse(c.start_time)), t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v) * (H - T - B);
  for (const e of c.escalation_list) {  // escalation episodes shaded behind the curve
    const a = x(Date.parse(e.start_time)), b = x(e.end_time ? Date.parse(e.end_time) : t1);
    const r = svg("rect", { class: "episode", x: a, y: T, width: Math.max(2, b - a), height: H - T - B });
    r.append(svg("title", {}, "escalation " + fmtClock(e.start_time) + " (" + e.status + ")"));
    s.append(r);
  }
  for (const turn of c.transcript) {
    const tx = x(Date.parse(turn.at));
    s.append(svg("line", { class: "turn", x1: tx, x2: tx, y1: H - B, y2: H - B + 4 }));
  }
  s.append(svg("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#8893a2" }));
  s.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#8893a2" }));
  for (const v of [0, 0.5, 1]) s.append(svg("text", { x: 2, y: y(v) + 4 }, v.toFixed(1)));
  s.append(svg("line", { class: "thr", x1: L, x2: W - R, y1: y(c.escalation_threshold), y2: y(c.escalation_threshold) }));
  s.append(svg("text", { x: W - R - 100, y: y(c.escalation_threshold) - 4 }, "escalates " + c.escalation_threshold));
  s.append(svg("line", { class: "close", x1: L, x2: W - R, y1: y(c.escalation_close_threshold), y2: y(c.escalation_close_threshold) }));
  s.append(svg("text", { x: L, y: H - 6 }, fmtClock(t0)));
  s.append(svg("text", { x: W - R - 52, y: H - 6 }, fmtClock(pts[pts.length - 1].t)));
  s.append(svg("polyline", { class: "frustration", points: pts.map((p) => x(p.t) + "," + y(p.v)).join(" ") }));
  for (const p of pts.filter((q) => !q.heard)) {
    const dot = svg("circle", { class: "unheard", cx: x(p.t), cy: y(p.v), r: 2.5 });
    dot.append(svg("title", {}, fmtClock(p.t) + ": the customer is silent; not counted"));
    s.append(dot);
  }
  const over = pts.filter((p) => p.heard && p.v >= c.escalation_threshold).length;
  const silent = pts.filter((p) => !p.heard).length;
  $("curve-desc").textContent = pts.length + " windows, " + over + " hearing the customer at or above the escalation threshold " +
    c.escalation_threshold + (silent ? " (" + silent + " without the customer's voice, hollow: not counted)" : "") + "; " +
    c.escalation_list.length + " escalation" + (c.escalation_list.length === 1 ? "" : "s") + " shaded.";
}

function showEscalations(c) {
  const ul = $("escalations");
  if (!c.escalation_list.length) {
    ul.replaceChildren(el("li", { class: "muted" }, "None: frustration never stayed over the threshold."));
    return;
  }
  ul.replaceChildren(...c.escalation_list.map((e) => {
    const li = el("li", { "data-id": e.id },
      el("strong", {}, fmtClock(e.start_time)), " – ", e.end_time ? fmtClock(e.end_time) : "ongoing",
      " · " + e.status + " · peak frustration " + pct(e.peak_frustration) + " · ");
    if (e.clip) li.append(el("a", { href: e.clip, target: "_blank", rel: "noopener", class: "clip" }, "narrated clip"));
    else li.append(el("span", { class: "muted" }, e.media_status === "failed" ? "clip failed" : "clip not rendered yet"));
    if (e.narration) li.append(el("div", { class: "narration" }, e.narration));
    return li;
  }));
}

function showTranscript(c) {
  const ol = $("transcript");
  ol.replaceChildren(...c.transcript.map((t) => {
    const who = t.speaker || "unknown";
    const mood = t.sentiment
      ? el("span", { class: "mood " + t.sentiment }, t.sentiment + " (" + pct(t[t.sentiment]) + ") · frustration " + pct(t.frustration))
      : el("span", { class: "mood" }, "not scored yet");
    const li = el("li", { class: who + (t.id === state.highlight ? " hit" : ""), "data-id": String(t.id) },
                  el("span", { class: "at" }, offset(t.at, c.start_time)), el("span", { class: "who" }, who),
                  el("span", { class: "said" }, marked(t.text, t.id === state.highlight ? state.words : [])), mood);
    return li;
  }));
  const hit = ol.querySelector("li.hit");
  if (hit) hit.scrollIntoView({ block: "center" });
}

// ---- search -----------------------------------------------------------------------------------------

async function search(q) {
  const box = $("results-box"), ul = $("results"), msg = $("search-msg");
  box.hidden = false;
  msg.textContent = "";
  msg.classList.remove("error");
  try {
    const r = await api("/api/transcripts/search?limit=100&q=" + encodeURIComponent(q));
    state.words = r.words;
    $("results-count").textContent = "(" + r.items.length + ")";
    if (!r.items.length) msg.textContent = "No transcript line matches.";
    ul.replaceChildren(...r.items.map((h) => {
      const b = el("button", { type: "button", "data-call": h.call_id, "data-id": String(h.id) },
                   el("span", { class: "where" }, h.call_id + " · " + fmtTime(h.at) + " · " + (h.speaker || "unknown") +
                                                  (h.sentiment ? " · " + h.sentiment : "")),
                   marked(h.text, r.words));
      b.addEventListener("click", () => openCall(h.call_id, h.id));
      return el("li", {}, b);
    }));
  } catch (e) {
    ul.replaceChildren();
    $("results-count").textContent = "";
    msg.textContent = e.message;
    msg.classList.add("error");
  }
}

// ---- start --------------------------------------------------------------------------------------------

async function refresh() {
  try {
    await loadCalls();
    if (state.current) {
      const c = state.calls.find((x) => x.call_id === state.current.call_id);
      if (c && c.live) await openCall(c.call_id, state.highlight);  // a live call keeps moving
    }
  } catch (e) {
    status(e.message);
  }
}

async function session() {
  try { await openSession(); } catch (e) { status(e.message); }
}

async function start() {
  takeFragment();
  watchTokenForm(async () => { await session(); await refresh(); });
  $("f-state").addEventListener("change", refresh);
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("q").value.trim();
    if (q) search(q);
  });
  await session();
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);

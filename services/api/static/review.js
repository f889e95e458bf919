// fusionwatch review page: queue, event view, verdicts, keyboard shortcuts, live updates.
// Plain browser JavaScript, no build step. Every value from the API is inserted with textContent
// (never innerHTML), so log lines and notes cannot inject markup.
"use strict";

const state = { items: [], index: -1, current: null, newIds: new Set(), loading: null };

// ---- small helpers (the shared ones are in common.js) ------------------------------------------------

const label = (s) => String(s || "").replace(/_/g, " ");

function say(text, isError = false) {
  const m = $("action-msg");
  m.textContent = text;
  m.classList.toggle("error", isError);
}

function reviewer() {
  const v = $("reviewer").value.trim();
  if (v) localStorage.setItem("fw-reviewer", v);
  return v;
}

// ---- queue ------------------------------------------------------------------------------------------

function queueQuery() {
  const p = new URLSearchParams({ limit: "200", order: "newest" });
  const verdict = $("f-verdict").value, severity = $("f-severity").value, where = $("f-where").value.trim();
  if (verdict) p.set("verdict", verdict);
  if (severity) p.set("severity", severity);
  if (where) p.set(/-S/.test(where) ? "asset" : "line", where);
  return p;
}

async function loadQueue(keepId) {
  const serial = $("f-serial").value.trim();
  let items;
  try {
    if (serial) {
      items = await api("/api/search?" + new URLSearchParams({ serial, prefix: "true" }));
      $("queue-count").textContent = "(" + items.length + " with serial " + serial + ")";
    } else {
      const page = await api("/api/events?" + queueQuery());
      items = page.items;
      $("queue-count").textContent = "(" + page.total + ")";
    }
  } catch (e) {
    $("queue-count").textContent = "";
    $("live").textContent = "queue: " + e.message;
    return;
  }
  state.items = items;
  renderQueue();
  const at = keepId ? items.findIndex((x) => x.id === keepId) : -1;
  if (at >= 0) { state.index = at; markCurrent(); }
  else if (state.index >= items.length) state.index = items.length - 1;
}

function renderQueue() {
  const ul = $("queue");
  ul.replaceChildren();
  state.items.forEach((ev, i) => {
    const b = el("button", { type: "button", "data-id": ev.id, "aria-current": String(i === state.index) },
      el("span", { class: "sev sev-" + ev.severity }, ev.severity), " ", ev.asset, " · ", label(ev.kind),
      el("span", { class: "when" }, fmtTime(ev.start_time) + (ev.verdict ? " · " + label(ev.verdict.verdict) : "")));
    if (state.newIds.has(ev.id)) b.append(" ", el("span", { class: "new" }, "new"));
    b.addEventListener("click", () => select(i));
    ul.append(el("li", {}, b));
  });
  $("queue-empty").hidden = state.items.length > 0;
}

function markCurrent() {
  $("queue").querySelectorAll("button").forEach((b, i) => b.setAttribute("aria-current", String(i === state.index)));
  const cur = $("queue").querySelectorAll("button")[state.index];
  if (cur) cur.scrollIntoView({ block: "nearest" });
}

async function select(i) {
  if (i < 0 || i >= state.items.length) return;
  state.index = i;
  state.newIds.delete(state.items[i].id);
  markCurrent();
  const id = state.items[i].id;
  state.loading = id;
  try {
    const ev = await api("/api/events/" + encodeURIComponent(id));
    if (state.loading === id) showEvent(ev);
  } catch (e) { say(e.message, true); }
}

// ---- event view -----------------------------------------------------------------------------------

function showEvent(ev) {
  state.current = ev;
  $("placeholder").hidden = true;
  $("event").hidden = false;
  $("ev-title").textContent = ev.asset + " — " + label(ev.kind);
  $("ev-meta").textContent = [
    "severity " + ev.severity, "status " + ev.status, fmtTime(ev.start_time) + " → " + fmtTime(ev.end_time),
    "peak " + ev.peak_score.toFixed(3) + " vs threshold " + ev.threshold.toFixed(3) +
      " (×" + (ev.peak_score / ev.threshold).toFixed(2) + ")",
    ev.line ? "line " + ev.line : null, "model " + ev.model_version,
    ev.learning ? "opened while the station learned its baseline (guard threshold)" : null,
    ev.closed_by === "stream_stopped" ? "closed because the station stopped sending, not because the fault ended" : null,
  ].filter(Boolean).join(" · ");
  $("ev-verdict").textContent = ev.verdict
    ? "Verdict: " + label(ev.verdict.verdict) + " (" + label(ev.verdict.kind) + ") by " + ev.verdict.reviewer
    : "Not reviewed yet";
  $("v-kind").value = ev.verdict && ev.verdict.kind ? ev.verdict.kind : ev.kind;
  $("v-note").value = "";
  say("");
  showMedia(ev);
  drawTimeline(ev);
  showShares(ev);
  showLogs(ev);
  showSerials(ev);
  showEvidence(ev);
}

function showMedia(ev) {
  const video = $("video"), none = $("no-video");
  video.pause();
  // a fresh <track> per event: Chromium keeps the old cues when only a track's src changes
  video.querySelectorAll("track").forEach((t) => t.remove());
  if (ev.media.clip) {
    video.hidden = false; none.hidden = true;
    video.src = ev.media.clip;
    if (ev.media.thumbnail) video.poster = ev.media.thumbnail; else video.removeAttribute("poster");
    if (ev.media.subtitles) {
      video.append(el("track", { kind: "subtitles", srclang: "en", label: "Narration", default: "", src: ev.media.subtitles }));
    }
    // subtitles on: the narration is the explanation, and the video starts muted
    if (video.textTracks.length) video.textTracks[0].mode = "showing";
    video.load();
    video.play().catch(() => { /* autoplay refused: the controls are there */ });
  } else {
    video.removeAttribute("src"); video.load(); video.hidden = true; none.hidden = false;
    none.textContent = ev.media.status
      ? "The summary is " + ev.media.status + (ev.media.missing.length ? " (missing: " + ev.media.missing.join(", ") + ")" : "") + "."
      : "No narrated clip yet: the summarizer renders it after the event closes.";
  }
  $("narration").textContent = ev.media.narration || "";
}

function drawTimeline(ev) {
  const s = $("timeline");
  const { W, H, L, R, T, B } = chartFrame(s, 44);
  const pts = ev.scores.map((p) => ({ t: Date.parse(p.time), v: p.score }));
  if (!pts.length) {
    s.append(svg("text", { x: 20, y: 75 }, "no score timeline stored"));
    $("timeline-desc").textContent = "No scores were stored for this event.";
    return;
  }
  const t0 = pts[0].t, t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
  const vmax = Math.max(ev.threshold, ...pts.map((p) => p.v)) * 1.1;
  const vmin = Math.min(0, ...pts.map((p) => p.v));
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - vmin) / (vmax - vmin || 1)) * (H - T - B);
  s.append(svg("line", { x1: L, y1: y(vmin), x2: W - R, y2: y(vmin), stroke: "#8893a2" }));
  s.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#8893a2" }));
  for (const v of [vmin, ev.threshold, vmax / 1.1]) s.append(svg("text", { x: 2, y: y(v) + 4 }, v.toFixed(2)));
  s.append(svg("text", { x: L, y: H - 6 }, fmtClock(pts[0].t)));
  s.append(svg("text", { x: W - R - 52, y: H - 6 }, fmtClock(pts[pts.length - 1].t)));
  s.append(svg("line", { class: "thr", x1: L, x2: W - R, y1: y(ev.threshold), y2: y(ev.threshold) }));
  s.append(svg("text", { x: W - R - 70, y: y(ev.threshold) - 4 }, "threshold"));
  s.append(svg("polyline", { class: "score", points: pts.map((p) => x(p.t) + "," + y(p.v)).join(" ") }));
  for (const p of pts.length <= 300 ? pts : []) {  // markers only while they stay readable
    const c = svg("circle", { cx: x(p.t), cy: y(p.v), r: 3, class: p.v >= ev.threshold ? "over" : "under" });
    c.append(svg("title", {}, fmtClock(p.t) + " score " + p.v.toFixed(3)));
    s.append(c);
  }
  const over = pts.filter((p) => p.v >= ev.threshold).length;
  $("timeline-desc").textContent = pts.length + " windows, " + over + " at or over the threshold " +
    ev.threshold.toFixed(3) + "; peak " + ev.peak_score.toFixed(3) + ".";
}

function showShares(ev) {
  const dl = $("shares");
  dl.replaceChildren();
  const a = ev.attribution, shares = Object.entries(a.modality_shares || {}).sort((p, q) => q[1] - p[1]);
  const names = { frames: "camera", audio: "sound", logs: "logs" };
  for (const [m, v] of shares) {
    const id = "share-" + m;
    dl.append(el("dt", { id }, names[m] || m));
    const meter = el("meter", { min: "0", max: "1", value: String(v), "aria-labelledby": id });
    dl.append(el("dd", {}, meter, el("span", {}, Math.round(v * 100) + "%")));
  }
  if (!shares.length) dl.append(el("dt", {}, "—"), el("dd", {}, "no attribution stored"));
  const extra = [];
  if (a.cross_modal_share) extra.push("cross-modal inconsistency " + Math.round(a.cross_modal_share * 100) + "% of the score");
  if (a.audio_band_hz) extra.push("sound band " + a.audio_band_hz.map((f) => Math.round(f)).join("–") + " Hz");
  if (a.frame_region) extra.push("image region " + a.frame_region.map((f) => f.toFixed(2)).join(", "));
  if (a.log_codes && a.log_codes.length) extra.push("log codes " + a.log_codes.join(", "));
  $("attribution-extra").textContent = extra.join(" · ");
}

function highlighted(line, needles) {
  // split the line around every needle and wrap those parts in <mark>
  const frag = document.createDocumentFragment();
  const hits = needles.filter(Boolean);
  let rest = line;
  while (rest) {
    let best = -1, len = 0;
    for (const n of hits) {
      const i = rest.indexOf(n);
      if (i >= 0 && (best < 0 || i < best)) { best = i; len = n.length; }
    }
    if (best < 0) { frag.append(rest); break; }
    frag.append(rest.slice(0, best), el("mark", {}, rest.slice(best, best + len)));
    rest = rest.slice(best + len);
  }
  return frag;
}

function showLogs(ev) {
  const ol = $("logs");
  ol.replaceChildren();
  const top = new Set(ev.attribution.top_log_lines || []);
  const needles = [...(ev.attribution.log_codes || []), ...ev.serials];
  for (const line of ev.log_lines) {
    const li = el("li", top.has(line) ? { class: "hit" } : {}, highlighted(line, needles));
    if (top.has(line)) li.setAttribute("aria-label", "flagged by the model: " + line);
    ol.append(li);
  }
  if (!ev.log_lines.length) ol.append(el("li", { class: "muted" }, "no log lines in this event"));
}

function showSerials(ev) {
  const ul = $("serials");
  ul.replaceChildren();
  for (const s of ev.serials) {
    const a = el("a", { href: "#" }, s);
    a.addEventListener("click", (e) => { e.preventDefault(); $("f-serial").value = s; loadQueue(); });
    ul.append(el("li", {}, a));
  }
  if (!ev.serials.length) ul.append(el("li", { class: "muted" }, "none recorded"));
}

function showEvidence(ev) {
  const tb = $("evidence");
  tb.replaceChildren();
  for (const [m, ranges] of Object.entries(ev.evidence || {})) {
    for (const r of [].concat(ranges)) {
      tb.append(el("tr", {}, el("td", {}, m), el("td", {}, r.topic), el("td", {}, r.partition), el("td", {}, r.first), el("td", {}, r.last)));
    }
  }
  const h = $("history");
  h.replaceChildren();
  for (const r of ev.reviews) {
    h.append(el("li", {}, fmtTime(r.at) + " — " + r.reviewer + " " + r.action +
      (r.verdict ? " " + label(r.verdict) + " (" + label(r.kind) + ")" : "") + (r.note ? ": " + r.note : "")));
  }
  if (!ev.reviews.length) h.append(el("li", {}, "no reviews yet"));
}

// ---- actions --------------------------------------------------------------------------------------

async function act(kind) {
  const ev = state.current;
  if (!ev) return;
  const who = reviewer();
  if (!who) { say("Enter your name as reviewer first.", true); $("reviewer").focus(); return; }
  const note = $("v-note").value.trim() || null;
  let path, body;
  if (kind === "real" || kind === "false_alarm") {
    path = "/verdict";
    body = { verdict: kind, reviewer: who, note, kind: $("v-kind").value.trim() || null };
  } else {
    path = kind === "ack" ? "/acknowledge" : "/resolve";
    body = { reviewer: who, note };
  }
  try {
    const updated = await api("/api/events/" + encodeURIComponent(ev.id) + path, { method: "POST", body });
    const what = kind === "real" ? "real defect" : kind === "false_alarm" ? "false alarm" : kind === "ack" ? "acknowledged" : "resolved";
    say("Saved: " + what + ".");
    $("live").textContent = ev.asset + " marked " + what;
    const i = state.index;
    await loadQueue(updated.id);
    if (state.items[i] && state.items[i].id === updated.id) { showEvent(updated); if (path === "/verdict") select(i + 1); }
    else if (state.items.length) select(Math.min(i, state.items.length - 1));
    else showEvent(updated);
  } catch (e) { say("Not saved: " + e.message, true); }
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
  const k = e.key.toLowerCase();
  if (k === "j") { e.preventDefault(); select(Math.min(state.index + 1, state.items.length - 1)); }
  else if (k === "k") { e.preventDefault(); select(Math.max(state.index - 1, 0)); }
  else if (k === "r") { e.preventDefault(); act("real"); }
  else if (k === "f") { e.preventDefault(); act("false_alarm"); }
  else if (k === "a") { e.preventDefault(); act("ack"); }
}

// ---- station baselines ------------------------------------------------------------------------------

async function loadBaselines() {
  let rows;
  try { rows = await api("/api/baselines"); } catch (_) { return; }
  const phase = { learning: "learning its baseline", watching: "watching", pending: "new normal pending",
    unknown: "not seen yet" };
  $("baselines").replaceChildren(...rows.map((b) => {
    const reset = b.last_reset ? " · new normal " + fmtTime(b.last_reset.requested_at) + " by " +
      b.last_reset.requested_by + ": " + b.last_reset.reason : "";
    return el("li", { class: "baseline " + b.phase, "data-asset": b.asset },
      el("strong", {}, b.asset), " " + (phase[b.phase] || b.phase) + " (" + b.windows + " windows)" + reset);
  }));
  const keep = $("nn-asset").value;
  $("nn-asset").replaceChildren(...rows.map((b) => el("option", { value: b.asset }, b.asset)));
  if (keep) $("nn-asset").value = keep;
}

async function markNewNormal(e) {
  e.preventDefault();
  const who = reviewer();
  if (!who) { $("nn-msg").textContent = "Enter your name as reviewer first."; $("reviewer").focus(); return; }
  const asset = $("nn-asset").value;
  try {
    await api("/api/assets/" + encodeURIComponent(asset) + "/new-normal",
      { method: "POST", body: { actor: who, reason: $("nn-reason").value.trim() } });
    $("nn-msg").textContent = asset + ": new normal recorded; it learns its baseline again within ~10 s.";
    $("nn-reason").value = "";
    await loadBaselines();
  } catch (err) { $("nn-msg").textContent = "Not saved: " + err.message; }
}

// ---- live updates ------------------------------------------------------------------------------------

let refreshTimer = null;
function connectLive() {
  const source = new EventSource("/api/events/stream", { withCredentials: true });
  source.addEventListener("open", () => { $("live").textContent = "live"; });
  source.addEventListener("error", () => { $("live").textContent = "reconnecting…"; });
  source.addEventListener("event", (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (_) { return; }
    if (!state.items.some((x) => x.id === ev.id)) state.newIds.add(ev.id);
    $("live").textContent = "live · " + ev.asset + " " + label(ev.kind) + " " + ev.status;
    clearTimeout(refreshTimer);  // one refresh for a burst of changes
    refreshTimer = setTimeout(() => {
      const keep = state.items[state.index] ? state.items[state.index].id : null;
      loadQueue(keep).then(() => { if (state.index < 0 && state.items.length) select(0); });
    }, 300);
  });
}

// ---- start ----------------------------------------------------------------------------------------------

async function session() {
  try { await openSession(); } catch (e) { say(e.message, true); }
}

// a notification's link (/#event=<id>): that event, in the queue when it is there, else on its own
async function openLinked(id) {
  const at = state.items.findIndex((x) => x.id === id);
  if (at >= 0) return select(at);
  try {
    const ev = await api("/api/events/" + encodeURIComponent(id));
    state.index = -1;
    markCurrent();
    showEvent(ev);
  } catch (e) { say("Event " + id + ": " + e.message, true); }
}

async function start() {
  const linked = takeFragment().event;
  // a link opened in a tab that already shows the page only changes the fragment; one that comes
  // while the page is still starting waits for the queue, then wins over the first item
  let started = false, later = null;
  window.addEventListener("hashchange", () => {
    const id = takeFragment().event;
    if (!id) return;
    if (started) openLinked(id); else later = id;
  });
  $("reviewer").value = localStorage.getItem("fw-reviewer") || "";
  $("reviewer").addEventListener("change", reviewer);
  watchTokenForm(async () => { await session(); await loadQueue(); if (linked) await openLinked(linked); });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); state.index = -1; loadQueue().then(() => select(0)); });
  $("btn-real").addEventListener("click", () => act("real"));
  $("btn-false").addEventListener("click", () => act("false_alarm"));
  $("btn-ack").addEventListener("click", () => act("ack"));
  $("btn-resolve").addEventListener("click", () => act("resolve"));
  document.addEventListener("keydown", onKey);
  const kinds = ["surface_defect", "missing_component", "misaligned_part", "camera_occlusion", "bearing_fault",
    "imbalance", "belt_squeal", "cavitation", "unseen_error_code", "log_rate_anomaly", "motor_runs_conveyor_stopped",
    "estop_but_moving", "cycles_without_parts", "sensor_glitch", "normal_variation"];
  $("kinds").replaceChildren(...kinds.map((k) => el("option", { value: k })));
  $("new-normal").addEventListener("submit", markNewNormal);
  await session();
  await loadQueue();
  later = later || linked;  // a link that came while starting wins over the page's own
  if (!later && state.items.length) await select(0);
  while (later) {  // links that came while starting: the last one is the one to show
    const id = later;
    later = null;
    await openLinked(id);
  }
  started = true;
  await loadBaselines();
  setInterval(loadBaselines, 15000);
  connectLive();
}

document.addEventListener("DOMContentLoaded", start);

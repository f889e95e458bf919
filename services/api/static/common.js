// Shared by the review page (review.js) and the calls page (calls.js): the API token, the API
// client, DOM builders and time formatting. Plain browser JavaScript, no build step, loaded first.
// Values from the API go into the page with textContent only (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const auth = { token: null };

// ---- token, link fragment and API ---------------------------------------------------------------

// `fusionwatch api` prints http://host:port/#token=...; a notification links to /#event=<id>.
// The fragment never reaches the server; the token is kept per tab and taken out of the address bar.
function takeFragment() {
  const hash = location.hash.replace(/^#/, "");
  const get = (key) => {
    const m = hash.match(new RegExp("(?:^|&)" + key + "=([^&]+)"));
    return m ? decodeURIComponent(m[1]) : null;
  };
  const token = get("token");
  if (token) {
    sessionStorage.setItem("fw-token", token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  auth.token = sessionStorage.getItem("fw-token");
  return { event: get("event") };
}

// the token form (shown on a 401): `onToken` runs once the typed token is in use
function watchTokenForm(onToken) {
  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    auth.token = $("token").value.trim();
    sessionStorage.setItem("fw-token", auth.token);
    $("token-form").hidden = true;
    await onToken();
  });
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (auth.token) headers.Authorization = "Bearer " + auth.token;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method: options.method || "GET", headers, credentials: "same-origin",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    if (res.status === 401) $("token-form").hidden = false;
    throw new Error(data && data.error ? data.error.message : res.status + " " + res.statusText);
  }
  return data;
}

// a read-only session cookie, so <video>, <track>, <img> and clip links load when reads need the token
async function openSession() {
  if (auth.token) await api("/api/session", { method: "POST" });
}

// ---- DOM ------------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const svgNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A time chart's empty frame in `s` (an <svg>), drawn in CSS pixels so text is not stretched: the
// viewBox follows the element's size. `left`: room for the value axis. Returns the plot's box.
function chartFrame(s, left) {
  s.replaceChildren();
  const W = Math.max(320, Math.round(s.getBoundingClientRect().width) || 640), H = 150, L = left, R = 8, T = 10, B = 24;
  s.setAttribute("viewBox", "0 0 " + W + " " + H);
  return { W, H, L, R, T, B };
}

// ---- time -----------------------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");
const fmtClock = (t) => { const d = new Date(t); return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()); };
// local time, unambiguous and sortable: 2024-05-01 14:03:07
const fmtTime = (iso) => {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + fmtClock(d);
};

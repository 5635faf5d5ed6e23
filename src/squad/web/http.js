// HTTP to the API: every call goes through api(), so each carries the token and a 401 opens the token dialog once.

import { state, TOKEN_KEY } from "./state.js";
import { $ } from "./util.js";

// ---- HTTP ----------------------------------------------------------------------------------
class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

export async function api(path, { method = "GET", body, raw = false } = {}) {
  for (;;) {
    const headers = {};
    const token = state.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new HttpError(0, "the server does not answer");
    }
    if (res.status === 401) {
      // Refused a token replaced while the request was on its way: try the new one, ask nobody.
      if (state.token === token) await askToken(Boolean(token));
      continue;
    }
    if (!res.ok) {
      let detail = `${res.status} ${res.statusText}`;
      try { const j = await res.json(); if (j && j.detail) detail = j.detail; } catch (e) { /* not JSON */ }
      throw new HttpError(res.status, detail);
    }
    return raw ? res : res.json();
  }
}

// ---- token ---------------------------------------------------------------------------------
const tokenListeners = [];
// Run `fn` whenever a new token is entered (main.js restarts the event feed with it).
export function onTokenChange(fn) { tokenListeners.push(fn); }
let tokenWaiters = null;
function askToken(wrong) {
  const dlg = $("#token-dialog");
  const err = $("#token-error");
  if (wrong) {
    err.textContent = "That token was refused by the server (401). Check SQUAD_API_TOKEN and try again.";
    err.hidden = false;
  } else {
    err.hidden = true;
  }
  if (!tokenWaiters) {
    tokenWaiters = [];
    $("#token-input").value = "";
    if (!dlg.open) dlg.showModal();
    $("#token-input").focus();
  }
  return new Promise((resolve) => tokenWaiters.push(resolve));
}
export function setupToken() {
  const dlg = $("#token-dialog");
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("#token-input").value.trim();
    if (!value) return;
    state.token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    dlg.close();
    const waiters = tokenWaiters || [];
    tokenWaiters = null;
    waiters.forEach((w) => w());
    tokenListeners.forEach((fn) => fn());
  });
  dlg.addEventListener("cancel", (ev) => ev.preventDefault()); // nothing works without it
}
// Who is signed in (GET /api/auth): the header names the token and its role, and <body data-role>
// hides what the role cannot do (app.css: a viewer sees no card buttons; the server refuses them anyway, 403).
export async function loadWho() {
  try {
    const me = await api("/api/auth");
    document.body.dataset.role = me.role;
    const who = $("#who");
    who.textContent = me.token_required ? `${me.name} · ${me.role}` : "";
    who.hidden = !me.token_required;
  } catch (err) { /* server down: shown by the connection badge */ }
}

// Is the token (or its absence) accepted? One GET that needs it whenever the server has one.
export async function checkToken() {
  try {
    const token = state.token;
    const res = await fetch("/api/auth", { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    if (res.status === 401 && state.token === token) { await askToken(Boolean(token)); return true; }
  } catch (e) { /* server down: the feed keeps retrying */ }
  return false;
}

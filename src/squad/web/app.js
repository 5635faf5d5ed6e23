/* Squad dashboard: one static script, no build step, no dependencies.
 *
 * Data: GET /api/board once for the board (every card in its compact shape, pages of 1,000 read
 * concurrently), then the /ws/tasks event feed. Events are queued and applied once per animation
 * frame; only the cards they touch are redrawn (a progress event changes a bar's scale and two
 * texts, a status event moves one card between lanes). Cards whose status changed are re-read in
 * small batches (`/api/board?card_id=…`) for the fields events do not carry (next attempt time, cost). After a dropped socket the page reconnects
 * with `?since=<last event id>`, so it misses nothing still in the stream.
 */
"use strict";

(() => {
  const LANES = ["TODO", "BLOCKED", "QUEUED", "IN_PROGRESS", "RETRYING", "REVIEW", "FAILED", "CANCELLED", "DONE"];
  const FINISHED = new Set(["DONE", "FAILED", "CANCELLED"]);
  const RUNNING = new Set(["IN_PROGRESS"]);
  const CANCELLABLE = new Set(["QUEUED", "IN_PROGRESS", "RETRYING"]);
  const RETRYABLE = new Set(["FAILED", "CANCELLED"]);
  const TOKEN_KEY = "squad.token";
  const MAX_LOG_NODES = 1500;        // lines kept in the log view (older ones are dropped from the top)
  const REFRESH_BATCH = 100;         // cards re-read per request after status changes
  const BOARD_PAGE = 1000;           // cards per /api/board request (the API's largest page)
  const REFRESH_DELAY_MS = 300;
  const STALL_WARN_S = 120;          // "last output" turns orange after this long
  const PING_EVERY_MS = 20000;
  const OFFLINE_AFTER_FAILURES = 4;  // reconnect attempts before the indicator says Offline
  const MAX_PAUSED_EVENTS = 50000;   // beyond this, resuming re-reads the board instead
  const HISTORY_PAGE = 50;
  const LANE_WINDOW = 16;            // cards per lane in the DOM at first (a screen shows about eight)
  const LANE_STEP = 200;             // "show more" adds this many
  const LANE_SCROLL_STEP = 32;       // scrolling near a lane's end adds this many

  const $ = (sel, root = document) => root.querySelector(sel);
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch]));
  const nowS = () => Date.now() / 1000;
  const tsOf = (iso) => (iso ? Date.parse(iso) / 1000 : null);

  function fmtDur(s) {
    if (s == null || !isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  const fmtCost = (v) => (v ? `$${v < 1 ? v.toFixed(3) : v.toFixed(2)}` : "$0");
  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    const today = new Date();
    const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return d.toDateString() === today.toDateString() ? t : `${d.toLocaleDateString()} ${t}`;
  }

  // ---- state ---------------------------------------------------------------------------------
  const state = {
    cards: new Map(),      // card_id -> card (EnhancedCard + local fields)
    els: new Map(),        // card_id -> element
    lanes: new Map(),      // status -> {el, body, count, ids: [] sorted}
    selected: new Set(),
    queue: [],             // events waiting for the next frame
    paused: false,
    pausedEvents: [],
    lastId: null,          // last event id applied or queued (for ?since=)
    loaded: false,
    preload: [],           // events received before the board was read
    refresh: new Set(),
    refreshTimer: null,
    frame: 0,
    filters: { text: "", squad: "", agent: "", status: "", failed: false },
    view: "board",
    detailId: null,
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    squads: new Set(),
    agents: new Set(),
    defaultMaxRetries: null,
  };

  // ---- HTTP ----------------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path, { method = "GET", body, raw = false } = {}) {
    for (;;) {
      const headers = {};
      if (state.token) headers.Authorization = `Bearer ${state.token}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let res;
      try {
        res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      } catch (err) {
        throw new HttpError(0, "the server does not answer");
      }
      if (res.status === 401) {
        await askToken(Boolean(state.token));
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
  function setupToken() {
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
      feed.restart();
    });
    dlg.addEventListener("cancel", (ev) => ev.preventDefault()); // nothing works without it
  }
  // Is the token (or its absence) accepted? One GET that needs it whenever the server has one.
  async function checkToken() {
    try {
      const res = await fetch("/api/auth", { headers: state.token ? { Authorization: `Bearer ${state.token}` } : {} });
      if (res.status === 401) { await askToken(Boolean(state.token)); return true; }
    } catch (e) { /* server down: the feed keeps retrying */ }
    return false;
  }

  // ---- toasts --------------------------------------------------------------------------------
  function toast(text, bad = false) {
    const el = document.createElement("div");
    el.className = bad ? "toast bad" : "toast";
    el.textContent = text;
    $("#toasts").append(el);
    setTimeout(() => el.remove(), bad ? 7000 : 3500);
  }

  // ---- board rendering -----------------------------------------------------------------------
  function laneOf(card) { return LANES.includes(card.status) ? card.status : "TODO"; }
  function maxAttempts(c) {
    const mr = c.max_retries ?? state.defaultMaxRetries;
    return mr == null ? "?" : mr + 1;
  }
  function elapsedOf(c) {
    if (!RUNNING.has(c.status)) return c.elapsed ?? null;
    if (c._elapsed == null) return null;
    return c._elapsed + (performance.now() - c._elapsedAt) / 1000;
  }
  function outAgo(c) { return c._lastOut ? nowS() - c._lastOut : null; }

  function timeText(c) {
    const parts = [];
    if (RUNNING.has(c.status)) {
      const lim = c.time_limit_s ? ` / ${fmtDur(c.time_limit_s)}` : "";
      parts.push(`<span class="c-el">${fmtDur(elapsedOf(c))}${lim}</span>`);
      const ago = outAgo(c);
      const stale = ago != null && ago > STALL_WARN_S ? " stale" : "";
      parts.push(`<span class="c-out${stale}">${ago == null ? "no output yet" : `output ${fmtDur(ago)} ago`}</span>`);
    } else if (c.elapsed != null && c.status !== "QUEUED") {
      parts.push(`<span>ran ${fmtDur(c.elapsed)}</span>`);
    }
    if (c.cost_usd) parts.push(`<span class="c-cost">${fmtCost(c.cost_usd)}</span>`);
    return parts.join(" · ");
  }
  function dueText(c) {
    if (c.status !== "RETRYING") return "";
    const at = tsOf(c.next_attempt_at);
    if (at == null) return "next attempt: when due";
    const left = at - nowS();
    return left > 0 ? `next attempt in ${fmtDur(left)}` : "next attempt due now";
  }

  function actionsHtml(c) {
    const b = [];
    if (RETRYABLE.has(c.status)) b.push(`<button type="button" data-action="retry">Retry</button>`);
    if (CANCELLABLE.has(c.status)) b.push(`<button type="button" data-action="cancel" class="danger">Cancel</button>`);
    if (c.status === "REVIEW") {
      b.push(`<button type="button" data-action="approve">Approve</button>`);
      b.push(`<button type="button" data-action="reject" class="danger">Reject</button>`);
    }
    return b.join("");
  }

  function cardInner(c) {
    const p = Math.max(0, Math.min(100, c.progress | 0));
    const step = c.current_step ? esc(c.current_step) : "";
    const sel = RETRYABLE.has(c.status)
      ? `<input type="checkbox" class="sel" aria-label="Select ${esc(c.card_id)}"${state.selected.has(c.card_id) ? " checked" : ""}>` : "";
    const meta = [c.squad, c.agent].filter(Boolean).map(esc).join(" · ");
    const att = c.attempts ? `attempt ${c.attempts}/${maxAttempts(c)}` : "not run yet";
    const err = (c.status === "FAILED" || c.status === "RETRYING" || c.status === "BLOCKED") && c.last_error
      ? `<div class="c-err" title="${esc(c.last_error)}">${esc(c.last_error)}</div>` : "";
    const due = c.status === "RETRYING" ? `<div class="c-due">${dueText(c)}</div>` : "";
    return `<div class="c-head">${sel}<span class="c-id">${esc(c.card_id)}</span>` +
      `<span class="prio${c.priority >= 8 ? " hi" : ""}" title="priority ${c.priority}">P${c.priority}</span></div>` +
      `<div class="c-title">${esc(c.title)}</div>` +
      `<div class="c-meta">${meta ? meta + " · " : ""}${att}</div>` +
      `<div class="bar" role="progressbar" aria-label="Progress of ${esc(c.card_id)}" aria-valuemin="0" aria-valuemax="100" ` +
      `aria-valuenow="${p}" aria-valuetext="${p}%${step ? " " + step : ""}"><i style="transform:scaleX(${p / 100})"></i></div>` +
      `<div class="c-step">${p}%${step ? " · " + step : ""}</div>` +
      `<div class="c-time">${timeText(c)}</div>${due}${err}` +
      `<div class="c-act">${actionsHtml(c)}</div>`;
  }
  function cardHtml(c) {
    return `<article class="card${state.selected.has(c.card_id) ? " selected" : ""}" tabindex="0" role="listitem" ` +
      `data-card-id="${esc(c.card_id)}" data-status="${esc(c.status)}">${cardInner(c)}</article>`;
  }

  // Lane order: active lanes most urgent first; finished lanes most recent first.
  function compare(lane, a, b) {
    if (FINISHED.has(lane)) {
      return (b.updated_at || "").localeCompare(a.updated_at || "") || a.card_id.localeCompare(b.card_id);
    }
    return (b.priority - a.priority) || (a.created_at || "").localeCompare(b.created_at || "") || a.card_id.localeCompare(b.card_id);
  }
  function sortedIds(lane, cards) { return cards.sort((a, b) => compare(lane, a, b)).map((c) => c.card_id); }

  function buildBoard() {
    const board = $("#view-board");
    board.textContent = "";
    state.lanes.clear();
    for (const lane of LANES) {
      const el = document.createElement("section");
      el.className = "lane";
      el.dataset.lane = lane;
      el.setAttribute("aria-label", `${lane} lane`);
      el.innerHTML = `<div class="lane-head"><span class="dot"></span><span class="lane-name">${lane.replace("_", " ")}</span>` +
        `<span class="pill lane-count">0</span></div><div class="lane-body" role="list"></div>` +
        `<button type="button" class="lane-more" hidden></button>`;
      board.append(el);
      const L = { name: lane, el, body: $(".lane-body", el), count: $(".lane-count", el), more: $(".lane-more", el),
        ids: [], limit: LANE_WINDOW, shown: 0, matching: 0 };
      L.more.addEventListener("click", () => { L.limit += LANE_STEP; syncLane(L); });
      L.body.addEventListener("scroll", () => {
        if (L.shown >= L.matching || L.limit > L.shown) return;
        const b = L.body;
        if (b.scrollTop + b.clientHeight >= b.scrollHeight - 600) { L.limit += LANE_SCROLL_STEP; syncLane(L); }
      }, { passive: true });
      state.lanes.set(lane, L);
    }
  }

  // Each lane keeps every card id in order (L.ids) but puts only the first L.limit matching cards
  // in the DOM; "show more" (or scrolling to the end) widens the window. A lane is reconciled by
  // key: elements of cards still shown stay (and keep focus), missing ones are created, others go.
  function syncLane(L) {
    const wanted = [];
    let matching = 0;
    for (const id of L.ids) {
      if (!matches(state.cards.get(id))) continue;
      matching += 1;
      if (wanted.length < L.limit) wanted.push(id);
    }
    const body = L.body;
    if (!body.firstElementChild && wanted.length) {
      body.innerHTML = wanted.map((id) => cardHtml(state.cards.get(id))).join("");
      for (const el of body.children) { state.els.set(el.dataset.cardId, el); el._lane = L.name; }
    } else {
      let cursor = body.firstElementChild;
      for (const id of wanted) {
        let el = state.els.get(id);
        if (!el) el = makeCard(state.cards.get(id));
        el._lane = L.name;
        if (el === cursor) cursor = cursor.nextElementSibling;
        else body.insertBefore(el, cursor);
      }
      while (cursor) {
        const next = cursor.nextElementSibling;
        if (state.els.get(cursor.dataset.cardId) === cursor) state.els.delete(cursor.dataset.cardId);
        cursor.remove();
        cursor = next;
      }
    }
    L.shown = wanted.length;
    L.matching = matching;
    L.count.textContent = matching;
    const rest = matching - wanted.length;
    L.more.hidden = rest <= 0;
    if (rest > 0) L.more.textContent = `Show ${Math.min(rest, LANE_STEP)} more of ${rest}`;
  }
  function makeCard(c) {
    const tpl = document.createElement("template");
    tpl.innerHTML = cardHtml(c);
    const el = tpl.content.firstElementChild;
    state.els.set(c.card_id, el);
    return el;
  }

  function renderAll() {
    const groups = new Map(LANES.map((l) => [l, []]));
    for (const c of state.cards.values()) { const lane = laneOf(c); c._lane = lane; groups.get(lane).push(c); }
    state.els.clear();
    for (const [lane, cards] of groups) {
      const L = state.lanes.get(lane);
      L.ids = sortedIds(lane, cards);
      L.body.textContent = "";
      syncLane(L);
    }
    updateCounts();
  }

  function bisect(lane, ids, card) {
    let lo = 0, hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compare(lane, state.cards.get(ids[mid]), card) < 0) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  // Keep a card's id in the right lane's order; returns the lanes whose DOM must be reconciled.
  function relane(c, dirty) {
    const lane = laneOf(c);
    if (c._lane === lane) return false;
    if (c._lane) {
      const old = state.lanes.get(c._lane);
      const i = old.ids.indexOf(c.card_id);
      if (i >= 0) old.ids.splice(i, 1);
      dirty.add(old);
    }
    const L = state.lanes.get(lane);
    L.ids.splice(bisect(lane, L.ids, c), 0, c.card_id);
    c._lane = lane;
    dirty.add(L);
    return true;
  }

  // Redraw touched cards: lane moves first (one reconciliation per lane), then contents.
  function redrawMany(touched) {
    const dirty = new Set();
    const f = state.filters;
    const filtering = Boolean(f.text || f.squad || f.agent || f.status || f.failed);
    for (const [id, full] of touched) {
      const c = state.cards.get(id);
      if (!c) continue;
      if (relane(c, dirty)) touched.set(id, true);
      else if (full && filtering) dirty.add(state.lanes.get(c._lane)); // it may match the filter no more
    }
    for (const L of dirty) syncLane(L);
    for (const [id, full] of touched) {
      const c = state.cards.get(id);
      const el = state.els.get(id);
      if (!c || !el) continue;
      if (full) {
        el.dataset.status = c.status;
        el.className = state.selected.has(id) ? "card selected" : "card";
        el.innerHTML = cardInner(c);
        el._time = undefined;
      } else {
        drawProgress(el, c);
      }
    }
    if (dirty.size) updateCounts();
  }
  function redraw(id, full) { redrawMany(new Map([[id, full]])); }

  function drawProgress(el, c) {
    const p = Math.max(0, Math.min(100, c.progress | 0));
    const bar = el.querySelector(".bar");
    const step = c.current_step || "";
    if (bar.getAttribute("aria-valuenow") !== String(p)) {
      bar.setAttribute("aria-valuenow", String(p));
      bar.firstElementChild.style.transform = `scaleX(${p / 100})`;
    }
    bar.setAttribute("aria-valuetext", `${p}%${step ? " " + step : ""}`);
    el.querySelector(".c-step").textContent = `${p}%${step ? " · " + step : ""}`;
  }

  function updateCounts() {
    let shown = 0;
    for (const [lane, L] of state.lanes) {
      shown += L.matching;
      L.el.hidden = (lane === "REVIEW" && L.ids.length === 0 && !state.hasReview) ||
        Boolean(state.filters.status && state.filters.status !== lane);
    }
    const running = state.lanes.get("IN_PROGRESS").ids.length;
    $("#summary").textContent = `${shown} of ${state.cards.size} cards · ${running} running`;
  }
  // ---- filters -------------------------------------------------------------------------------
  function matches(c) {
    const f = state.filters;
    if (f.squad && c.squad !== f.squad) return false;
    if (f.agent && c.agent !== f.agent) return false;
    if (f.status && c.status !== f.status) return false;
    if (f.failed && !(c.status === "FAILED" || c.status === "RETRYING" || c.task_status === "FAILURE")) return false;
    if (f.text) {
      const t = f.text;
      if (!c.card_id.toLowerCase().includes(t) && !(c.title || "").toLowerCase().includes(t)) return false;
    }
    return true;
  }
  function applyFilters() {
    for (const L of state.lanes.values()) { L.limit = LANE_WINDOW; syncLane(L); }
    updateCounts();
    if (state.view === "history") { history.offset = 0; loadHistory(); }
  }
  function noteOptions(c) {
    let changed = false;
    if (c.squad && !state.squads.has(c.squad)) { state.squads.add(c.squad); changed = true; }
    if (c.agent && !state.agents.has(c.agent)) { state.agents.add(c.agent); changed = true; }
    if (c.status === "REVIEW") state.hasReview = true;
    return changed;
  }
  function fillOptions() {
    for (const [sel, values, all] of [["#f-squad", state.squads, "All squads"], ["#f-agent", state.agents, "All agents"]]) {
      const el = $(sel);
      const cur = el.value;
      el.innerHTML = `<option value="">${all}</option>` + [...values].sort().map((v) => `<option>${esc(v)}</option>`).join("");
      el.value = cur;
    }
  }
  function setupFilters() {
    $("#f-status").innerHTML = `<option value="">All statuses</option>` + LANES.map((l) => `<option>${l}</option>`).join("");
    let t = null;
    $("#f-text").addEventListener("input", (ev) => {
      clearTimeout(t);
      t = setTimeout(() => { state.filters.text = ev.target.value.trim().toLowerCase(); applyFilters(); }, 120);
    });
    for (const [sel, key] of [["#f-squad", "squad"], ["#f-agent", "agent"], ["#f-status", "status"]]) {
      $(sel).addEventListener("change", (ev) => { state.filters[key] = ev.target.value; applyFilters(); });
    }
    $("#f-failed").addEventListener("change", (ev) => { state.filters.failed = ev.target.checked; applyFilters(); });
  }

  // ---- selection and bulk retry --------------------------------------------------------------
  function updateBulk() {
    const btn = $("#bulk-retry");
    btn.textContent = `Retry selected (${state.selected.size})`;
    btn.disabled = state.selected.size === 0;
  }
  function toggleSelect(id, on) {
    if (on) state.selected.add(id); else state.selected.delete(id);
    const el = state.els.get(id);
    if (el) {
      el.classList.toggle("selected", on);
      const box = el.querySelector(".sel");
      if (box) box.checked = on;
    }
    updateBulk();
  }
  async function bulkRetry() {
    const ids = [...state.selected];
    if (!ids.length) return;
    $("#bulk-retry").disabled = true;
    try {
      const res = await api("/api/tasks/retry", { method: "POST", body: { card_ids: ids, force: false } });
      const refused = res.results.filter((r) => !r.ok);
      for (const id of ids) toggleSelect(id, false);
      toast(`${res.retried} card(s) queued again` + (refused.length ? `; ${refused.length} refused: ${refused[0].card_id}: ${refused[0].message}` : ""), refused.length > 0);
    } catch (err) {
      toast(`Retry failed: ${err.message}`, true);
    } finally {
      updateBulk();
    }
  }

  // ---- actions -------------------------------------------------------------------------------
  async function act(id, action, button) {
    if (action === "reject") { openReject(id); return; }
    const paths = {
      retry: [`/api/tasks/${encodeURIComponent(id)}/retry`, { force: false }],
      "retry-force": [`/api/tasks/${encodeURIComponent(id)}/retry`, { force: true }],
      cancel: [`/api/tasks/${encodeURIComponent(id)}/cancel`, undefined],
      approve: [`/api/cards/${encodeURIComponent(id)}/approve`, undefined],
    };
    const [path, body] = paths[action];
    if (button) button.disabled = true;
    try {
      const res = await api(path, { method: "POST", body });
      toast(res.message || `${action}: ${id}`);
      const old = state.cards.get(id);
      if (action === "cancel" && res.card && old) {
        const k = res.card; // a plain card: take its state, keep the board fields until the re-read
        applyCard({ ...old, status: k.status, attempts: k.attempts, progress: k.progress, current_step: k.current_step,
          last_error: k.last_error, updated_at: k.updated_at }, true);
      }
      markRefresh(id);
    } catch (err) {
      toast(`${action} ${id}: ${err.message}`, true);
      if (button) button.disabled = false;
    }
  }
  let rejectId = null;
  function openReject(id) {
    rejectId = id;
    $("#reject-feedback").value = "";
    $("#reject-dialog").showModal();
  }
  function setupReject() {
    $("#reject-cancel").addEventListener("click", () => $("#reject-dialog").close());
    $("#reject-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const feedback = $("#reject-feedback").value.trim();
      if (!feedback || !rejectId) return;
      $("#reject-dialog").close();
      try {
        const res = await api(`/api/cards/${encodeURIComponent(rejectId)}/reject`, { method: "POST", body: { feedback } });
        toast(res.message || `${rejectId} rejected`);
        markRefresh(rejectId);
      } catch (err) {
        toast(`reject ${rejectId}: ${err.message}`, true);
      }
    });
  }

  function setupBoardEvents() {
    const board = $("#view-board");
    // Cards have `content-visibility: auto`: the browser says when it stops or starts rendering
    // one (scrolled away or back); the clock leaves skipped cards alone and catches up on return.
    board.addEventListener("contentvisibilityautostatechange", (ev) => {
      const el = ev.target;
      el._skipped = ev.skipped;
      if (!ev.skipped && el.classList.contains("card")) tickCard(el);
    }, true); // captured: the event is fired at each card
    board.addEventListener("click", (ev) => {
      const card = ev.target.closest(".card");
      if (!card) return;
      const id = card.dataset.cardId;
      const btn = ev.target.closest("button[data-action]");
      if (btn) { ev.stopPropagation(); act(id, btn.dataset.action, btn); return; }
      if (ev.target.classList.contains("sel")) { toggleSelect(id, ev.target.checked); return; }
      location.hash = `#/cards/${encodeURIComponent(id)}`;
    });
    board.addEventListener("keydown", (ev) => {
      const card = ev.target.closest(".card");
      if (!card || ev.target !== card) return;
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        location.hash = `#/cards/${encodeURIComponent(card.dataset.cardId)}`;
      }
    });
    $("#bulk-retry").addEventListener("click", bulkRetry);
    $("#select-failed").addEventListener("click", () => {
      for (const id of state.lanes.get("FAILED").ids) {
        if (matches(state.cards.get(id))) toggleSelect(id, true);
      }
    });
  }

  // ---- applying data -------------------------------------------------------------------------
  function prepare(c, fetchedAt) {
    c._elapsed = c.elapsed ?? null;
    c._elapsedAt = fetchedAt;
    c._lastOut = tsOf(c.last_output_at);
    c._updated = tsOf(c.updated_at) || 0;
    return c;
  }
  // A card read from the API: replaces the local one unless events already showed a newer state.
  function applyCard(fresh, full) {
    const old = state.cards.get(fresh.card_id);
    const c = prepare({ ...fresh }, performance.now());
    if (old) {
      if (old._evTs && old._evTs > c._updated + 0.001) {
        c.status = old.status; c.attempts = old.attempts; c.progress = old.progress; c.current_step = old.current_step;
      }
      if (old._lastOut && (!c._lastOut || old._lastOut > c._lastOut)) c._lastOut = old._lastOut;
      if (RUNNING.has(c.status) && old._elapsed != null && c._elapsed == null) { c._elapsed = old._elapsed; c._elapsedAt = old._elapsedAt; }
      c._evTs = old._evTs;
      c._lane = old._lane;
    }
    state.cards.set(c.card_id, c);
    if (noteOptions(c)) fillOptions();
    redraw(c.card_id, full);
    if (state.detailId === c.card_id) detail.update(c);
  }

  function markRefresh(id) {
    state.refresh.add(id);
    if (!state.refreshTimer) state.refreshTimer = setTimeout(runRefresh, REFRESH_DELAY_MS);
  }
  async function runRefresh() {
    state.refreshTimer = null;
    const ids = [...state.refresh].slice(0, REFRESH_BATCH);
    ids.forEach((id) => state.refresh.delete(id));
    if (ids.length) {
      try {
        const q = ids.map((id) => `card_id=${encodeURIComponent(id)}`).join("&");
        const cards = await api(`/api/board?${q}`);
        for (const c of cards) applyCard(c, true);
      } catch (err) {
        ids.forEach((id) => state.refresh.add(id));
      }
    }
    if (state.refresh.size && !state.refreshTimer) state.refreshTimer = setTimeout(runRefresh, REFRESH_DELAY_MS);
  }

  // ---- events --------------------------------------------------------------------------------
  function onEvent(ev) {
    if (ev.id) state.lastId = ev.id;
    if (!state.loaded) { state.preload.push(ev); return; }
    if (state.paused) {
      state.pausedEvents.push(ev);
      if (state.pausedEvents.length > MAX_PAUSED_EVENTS) state.pausedEvents.length = 0, state.pausedOverflow = true;
      showPause();
      return;
    }
    state.queue.push(ev);
    if (!state.frame) state.frame = requestAnimationFrame(flush);
  }

  // Apply every queued event, then redraw each touched card once.
  function flush() {
    state.frame = 0;
    const events = state.queue;
    state.queue = [];
    const touched = new Map(); // id -> full redraw?
    for (const ev of events) applyEvent(ev, touched);
    redrawMany(touched);
    if (state.detailId && touched.has(state.detailId)) detail.update(state.cards.get(state.detailId));
  }

  function applyEvent(ev, touched, preload = false) {
    const id = ev.card_id;
    if (!id) return;
    const c = state.cards.get(id);
    if (!c) { if (ev.type !== "log") markRefresh(id); return; }
    const ts = tsOf(ev.timestamp) || nowS();
    if (ev.type === "log") {
      c._lastOut = Math.max(c._lastOut || 0, ts);
      if (state.detailId === id) detail.poke();
      return;
    }
    if (preload && ts < c._updated) return; // already in the board we read
    if (ev.type === "progress") {
      if (FINISHED.has(c.status) && ts <= (c._evTs || c._updated)) return;
      const wasRunning = RUNNING.has(c.status);
      if (!wasRunning && c.status !== "IN_PROGRESS") { c.status = "IN_PROGRESS"; touched.set(id, true); }
      c.progress = Math.max(0, Math.min(100, Number(ev.progress) || 0));
      if (ev.current_step !== undefined) c.current_step = ev.current_step;
      if (ev.elapsed !== undefined) { c._elapsed = Number(ev.elapsed); c._elapsedAt = performance.now(); }
      if (ev.worker) c._worker = ev.worker;
      c._lastOut = Math.max(c._lastOut || 0, ts);
      if (!touched.has(id)) touched.set(id, false);
    } else if (ev.type === "status") {
      const prev = c.status;
      c.status = ev.status;
      c._evTs = ts;
      if (ev.attempt !== undefined && Number(ev.attempt) > 0) c.attempts = Number(ev.attempt);
      if (ev.error) c.last_error = ev.error;
      if (ev.status === "QUEUED" || (ev.status === "IN_PROGRESS" && prev !== "IN_PROGRESS")) {
        c.progress = 0; c.current_step = null; c._elapsed = 0; c._elapsedAt = performance.now();
      }
      if (ev.status === "DONE") c.progress = 100;
      c.updated_at = ev.timestamp || c.updated_at;
      if (c.status === "REVIEW") state.hasReview = true;
      touched.set(id, true);
      markRefresh(id);
    }
  }

  function afterLoad() {
    state.loaded = true;
    const touched = new Map();
    for (const ev of state.preload) applyEvent(ev, touched, true);
    state.preload = [];
    redrawMany(touched);
    updateCounts();
  }

  // Every card of the board: the first two pages at once (a board of up to 2,000 cards costs one
  // round trip), then every other page at once. A card seen twice (the order shifted between two
  // pages) is kept once; one created meanwhile arrives as an event and is read then.
  async function readBoard() {
    const page = async (offset) => {
      const res = await api(`/api/board?limit=${BOARD_PAGE}&offset=${offset}`, { raw: true });
      return { total: Number(res.headers.get("X-Total-Count") || 0), cards: await res.json() };
    };
    const pages = await Promise.all([page(0), page(BOARD_PAGE)]);
    const rest = [];
    for (let offset = 2 * BOARD_PAGE; offset < pages[0].total; offset += BOARD_PAGE) rest.push(page(offset));
    pages.push(...await Promise.all(rest));
    return pages.flatMap((p) => p.cards);
  }

  async function loadBoard() {
    const t0 = performance.now();
    const cards = await readBoard();
    const at = performance.now();
    window.__squad.timing = { start: t0, fetched: at };
    state.cards.clear();
    for (const c of cards) { prepare(c, at); state.cards.set(c.card_id, c); noteOptions(c); }
    fillOptions();
    window.__squad.timing.prepared = performance.now();
    renderAll();
    afterLoad();
    document.body.dataset.loaded = "true";
    window.__squad.timing.rendered = performance.now();
    if (state.detailId) detail.open(state.detailId);
    if (state.view !== "workers") loadWorkers(); // after the board: it does not compete with it
  }

  // ---- socket --------------------------------------------------------------------------------
  const feed = {
    ws: null, failures: 0, timer: null, pingTimer: null, opened: false, everConnected: false,
    url() {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      const q = new URLSearchParams();
      if (state.lastId) q.set("since", state.lastId);
      if (state.token) q.set("token", state.token);
      const qs = q.toString();
      return `${proto}//${location.host}/ws/tasks${qs ? "?" + qs : ""}`;
    },
    connect() {
      clearTimeout(this.timer);
      this.opened = false;
      let ws;
      try { ws = new WebSocket(this.url()); } catch (e) { this.retry(); return; }
      this.ws = ws;
      ws.onopen = () => { this.opened = true; };
      ws.onmessage = (m) => this.message(m.data);
      ws.onclose = (ev) => { if (this.ws === ws) this.closed(ev); };
      ws.onerror = () => { /* onclose follows */ };
    },
    message(data) {
      if (data === "pong") { this.lastPong = Date.now(); return; }
      let ev;
      try { ev = JSON.parse(data); } catch (e) { return; }
      if (ev.type === "connected") {
        const resumed = this.everConnected;
        this.failures = 0;
        this.everConnected = true;
        setConn("live");
        this.startPing();
        if (!state.loaded && !this.loading) {
          this.loading = true;
          loadBoard().catch((err) => { toast(`Could not read the board: ${err.message}`, true); this.loading = false; });
        } else if (resumed && !state.lastId && state.loaded) {
          reloadBoard(); // no event id to resume from: read the board again
        }
        return;
      }
      onEvent(ev);
    },
    startPing() {
      clearInterval(this.pingTimer);
      this.lastPong = Date.now();
      this.pingTimer = setInterval(() => {
        if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
        if (Date.now() - this.lastPong > PING_EVERY_MS * 2.5) { this.ws.close(); return; }
        this.ws.send("ping");
      }, PING_EVERY_MS);
    },
    async closed(ev) {
      clearInterval(this.pingTimer);
      this.ws = null;
      const neverOpened = !this.opened;
      this.failures += 1;
      if (neverOpened && this.failures >= 2 && await checkToken()) return; // askToken restarts us
      setConn(this.failures >= OFFLINE_AFTER_FAILURES || !navigator.onLine ? "offline" : "reconnecting");
      if (!state.loaded && !this.loading && this.failures === 1) {
        // Show the board even without a live feed.
        this.loading = true;
        loadBoard().catch((err) => { toast(`Could not read the board: ${err.message}`, true); this.loading = false; });
      }
      this.retry(ev && ev.code === 4008 ? 0 : undefined);
    },
    retry(delay) {
      const d = delay ?? Math.min(10000, 500 * 2 ** Math.min(this.failures, 5));
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.connect(), d);
    },
    restart() {
      if (this.ws) { const ws = this.ws; this.ws = null; ws.close(); }
      this.failures = 0;
      this.connect();
    },
  };
  async function reloadBoard() {
    try {
      const cards = await readBoard();
      const at = performance.now();
      state.cards.clear();
      for (const c of cards) { prepare(c, at); state.cards.set(c.card_id, c); noteOptions(c); }
      renderAll();
    } catch (err) { toast(`Could not read the board: ${err.message}`, true); }
  }

  function setConn(s) {
    const el = $("#conn");
    el.dataset.state = s;
    el.textContent = { live: "Live", reconnecting: "Reconnecting…", offline: "Offline", connecting: "Connecting…" }[s];
    el.title = s === "live" ? "Receiving live events" : "The live feed is down; the page keeps trying and will catch up";
  }

  // ---- pause ---------------------------------------------------------------------------------
  function showPause() {
    const b = $("#pause");
    b.setAttribute("aria-pressed", String(state.paused));
    b.textContent = state.paused ? `Resume (${state.pausedEvents.length} waiting)` : "Pause";
  }
  function setupPause() {
    $("#pause").addEventListener("click", () => {
      state.paused = !state.paused;
      if (!state.paused) {
        if (state.pausedOverflow) { state.pausedOverflow = false; state.pausedEvents = []; reloadBoard(); }
        for (const ev of state.pausedEvents) state.queue.push(ev);
        state.pausedEvents = [];
        if (state.queue.length && !state.frame) state.frame = requestAnimationFrame(flush);
      }
      showPause();
    });
  }

  // ---- clock: elapsed, last output, retry countdowns ----------------------------------------
  // Visits the running and retrying cards in the page, skips those the browser is not rendering
  // (off screen, see setupBoardEvents) and writes only texts that changed.
  function tick() {
    if (document.hidden || state.paused) return;
    for (const L of [state.lanes.get("IN_PROGRESS"), state.lanes.get("RETRYING")]) {
      for (const el of L.body.children) {
        if (el._skipped) continue;
        tickCard(el);
      }
    }
    if (state.detailId) detail.tick();
  }
  function tickCard(el) {
    const c = state.cards.get(el.dataset.cardId);
    if (!c || !(RUNNING.has(c.status) || c.status === "RETRYING")) return;
    const html = timeText(c);
    if (el._time !== html) {
      const t = el.querySelector(".c-time");
      if (t) t.innerHTML = html;
      el._time = html;
    }
    const d = el.querySelector(".c-due");
    if (d) { const due = dueText(c); if (d.textContent !== due) d.textContent = due; }
  }

  // ---- detail drawer -------------------------------------------------------------------------
  const detail = {
    id: null, card: null, runs: [], lastLogId: null, follow: true, fetching: false, again: false,
    lastTask: undefined, archived: null, gen: 0,
    async open(id) {
      this.id = id; state.detailId = id; this.gen += 1; this.ready = false; this.full = null;
      const gen = this.gen;
      this.lastLogId = null; this.lastTask = undefined; this.follow = true; this.archived = null;
      const box = $("#detail");
      box.hidden = false;
      $("#d-log").textContent = "";
      $("#d-prompt").textContent = "";
      $("#d-prompt-box").open = false;
      $("#d-follow").hidden = true;
      const local = state.cards.get(id);
      if (local) this.update(local);
      else { $("#d-id").textContent = id; $("#d-title").textContent = ""; }
      $("#d-close").focus();
      try {
        const full = await api(`/api/cards/${encodeURIComponent(id)}`);
        if (gen !== this.gen) return;
        this.runs = full.runs || [];
        this.ready = true;
        this.drawRuns();
        this.full = full;
        this.update(state.cards.get(id) || full);
        $("#d-desc").textContent = full.description || "(none)";
        this.poke();
        if (this.card && this.card.status === "REVIEW") this.loadDiff();
      } catch (err) {
        if (gen !== this.gen) return;
        $("#d-title").textContent = err.status === 404 ? "Unknown card" : `Could not read the card: ${err.message}`;
      }
    },
    close() {
      this.id = null; state.detailId = null; this.gen += 1;
      $("#detail").hidden = true;
      const el = state.els.get(this.lastOpened || "");
      if (el) el.focus();
    },
    update(c) {
      this.card = c;
      // The board's compact card lacks some fields the drawer shows: they come from the full card.
      const more = this.full && this.full.card_id === c.card_id ? this.full : {};
      this.lastOpened = c.card_id;
      $("#d-id").textContent = c.card_id;
      const badge = $("#d-status");
      badge.textContent = c.status;
      badge.style.setProperty("--c", getComputedStyle(document.documentElement).getPropertyValue(statusColor(c.status)));
      $("#d-title").textContent = c.title || "";
      const acts = [];
      if (RETRYABLE.has(c.status)) acts.push(`<button type="button" data-action="retry">Retry</button>`);
      if (c.attempts > 0) acts.push(`<button type="button" data-action="retry-force" title="End a running attempt and start a new one">Retry (force)</button>`);
      if (CANCELLABLE.has(c.status)) acts.push(`<button type="button" data-action="cancel" class="danger">Cancel</button>`);
      if (c.status === "REVIEW") {
        acts.push(`<button type="button" data-action="approve" class="primary">Approve</button>`);
        acts.push(`<button type="button" data-action="reject" class="danger">Reject…</button>`);
      }
      const html = acts.join("");
      if ($("#d-actions").dataset.html !== html) { $("#d-actions").innerHTML = html; $("#d-actions").dataset.html = html; }
      const f = [
        ["Squad", c.squad || "–"], ["Agent", c.agent || "(default)"], ["Priority", c.priority],
        ["Attempt", c.attempts ? `${c.attempts} / ${maxAttempts(c)}` : "not run yet"],
        ["Progress", `${c.progress}%${c.current_step ? " · " + c.current_step : ""}`],
        ["Worker", c._worker || c.worker || "–"],
        ["Elapsed", `<span id="d-elapsed">${fmtDur(elapsedOf(c))}</span>${c.time_limit_s ? " / " + fmtDur(c.time_limit_s) : ""}`],
        ["Cost", fmtCost(c.cost_usd)],
        ["Depends on", (more.depends_on || []).map((d) => `<a href="#/cards/${encodeURIComponent(d)}">${esc(d)}</a>`).join(", ") || "–"],
        ["Labels", (more.labels || []).map(esc).join(", ") || "–"],
        ["Task", more.celery_task_id || "–"], ["Next attempt", c.status === "RETRYING" ? esc(dueText(c)) : "–"],
        ["Last error", c.last_error ? `<span class="bad">${esc(c.last_error)}</span>` : "–"], ["Updated", fmtTime(c.updated_at)],
      ];
      $("#d-fields").innerHTML = f.map(([k, v], i) => `<dt>${k}</dt><dd>${[4, 5, 6, 8, 9, 12].includes(i) ? v : esc(v)}</dd>`).join("");
      $("#d-diff-section").hidden = c.status !== "REVIEW";
      this.poke();
    },
    tick() {
      const el = $("#d-elapsed");
      if (el && this.card) el.textContent = fmtDur(elapsedOf(this.card));
      if (this.card && RUNNING.has(this.card.status)) this.poke();
    },
    // New log lines may exist: fetch what follows the last one seen (one request at a time).
    poke() {
      if (!this.id || this.archived || !this.ready) return; // runs first: they name the attempts
      if (this.fetching) { this.again = true; return; }
      this.loadLog();
    },
    async loadLog() {
      if (!this.id || this.fetching) return;
      const id = this.id, gen = this.gen;
      this.fetching = true;
      try {
        do {
          this.again = false;
          const q = this.lastLogId ? `after=${encodeURIComponent(this.lastLogId)}&limit=1000` : "limit=500";
          const lines = await api(`/api/tasks/${encodeURIComponent(id)}/logs?${q}`);
          if (gen !== this.gen) return;
          if (lines.length) { this.appendLines(lines); this.lastLogId = lines[lines.length - 1].id; }
          $("#d-logsrc").textContent = this.lastLogId && this.lastLogId.startsWith("0-") ? "archived log of the last run" : "live";
          if (lines.length >= 1000) this.again = true;
        } while (this.again);
      } catch (err) {
        /* the next event or tick retries */
      } finally {
        this.fetching = false;
      }
    },
    runFor(taskId) { return this.runs.find((r) => r.task_id === taskId); },
    appendLines(lines) {
      const log = $("#d-log");
      const frag = document.createDocumentFragment();
      for (const l of lines) {
        if (l.task_id !== this.lastTask) {
          this.lastTask = l.task_id;
          const run = this.runFor(l.task_id);
          const h = document.createElement("div");
          h.className = "att";
          h.textContent = run
            ? `── attempt ${run.attempt} · ${run.worker || "?"} · started ${fmtTime(run.started_at)} ──`
            : `── attempt · task ${l.task_id || "?"} ──`;
          if (!run && l.task_id) this.refreshRuns();
          frag.append(h);
        }
        const d = document.createElement("div");
        d.className = l.level === "ERROR" || l.level === "STDERR" ? "ln stderr" : "ln";
        const ts = document.createElement("span");
        ts.className = "ts";
        ts.textContent = (l.timestamp || "").slice(11, 19);
        d.append(ts, document.createTextNode(l.message));
        frag.append(d);
      }
      log.append(frag);
      let extra = log.childElementCount - MAX_LOG_NODES;
      if (extra > 0) {
        while (extra-- > 0) log.firstElementChild.remove();
        if (!log.firstElementChild.classList.contains("note")) {
          const n = document.createElement("div");
          n.className = "note";
          n.textContent = `older lines not shown (the view keeps the last ${MAX_LOG_NODES}); use the runs' logs below`;
          log.prepend(n);
        }
      }
      if (this.follow) log.scrollTop = log.scrollHeight;
    },
    async refreshRuns() {
      if (this.runsPending) return;
      this.runsPending = true;
      try {
        this.runs = await api(`/api/cards/${encodeURIComponent(this.id)}/runs`);
        this.drawRuns();
      } catch (e) { /* keep the old list */ } finally { this.runsPending = false; }
    },
    drawRuns() {
      $("#d-runs tbody").innerHTML = this.runs.map((r) => {
        const dur = r.started_at ? ((r.ended_at ? Date.parse(r.ended_at) : Date.now()) - Date.parse(r.started_at)) / 1000 : null;
        const cls = r.status === "succeeded" ? "ok" : (r.status === "failed" || r.status === "lost" ? "bad" : "");
        const tokens = r.input_tokens != null || r.output_tokens != null ? `${r.input_tokens ?? "–"} / ${r.output_tokens ?? "–"}` : "–";
        return `<tr><td>${r.attempt}</td><td>${esc(r.worker || "–")}</td><td>${fmtTime(r.started_at)}</td>` +
          `<td class="num">${fmtDur(dur)}</td><td class="num">${r.exit_code ?? "–"}</td><td class="${cls}">${esc(r.status)}</td>` +
          `<td class="err" title="${esc(r.error || "")}">${esc(r.error || "")}</td><td class="num">${r.cost_usd != null ? fmtCost(r.cost_usd) : "–"}</td>` +
          `<td class="num">${tokens}</td><td class="mono">${esc(r.session_id || "–")}</td>` +
          `<td>${r.log_available ? `<button type="button" data-run="${r.id}" data-attempt="${r.attempt}">view</button>` : "–"}</td></tr>`;
      }).join("") || `<tr><td colspan="11" class="muted">no runs yet</td></tr>`;
    },
    async showRunLog(runId, attempt) {
      try {
        const res = await api(`/api/runs/${runId}/log`);
        this.archived = runId;
        const log = $("#d-log");
        log.textContent = "";
        const h = document.createElement("div");
        h.className = "att";
        h.textContent = `── archived log of attempt ${attempt} ──`;
        log.append(h);
        const lines = res.log.split("\n").slice(-MAX_LOG_NODES);
        const frag = document.createDocumentFragment();
        for (const line of lines) {
          const d = document.createElement("div");
          d.className = / ERROR /.test(line.slice(0, 40)) ? "ln stderr" : "ln";
          d.textContent = line;
          frag.append(d);
        }
        log.append(frag);
        $("#d-logsrc").innerHTML = `archived log of attempt ${attempt} · <a href="#" id="d-back-live">back to the live log</a>`;
        log.scrollTop = 0;
      } catch (err) { toast(`log: ${err.message}`, true); }
    },
    backToLive() {
      this.archived = null; this.lastLogId = null; this.lastTask = undefined; this.follow = true;
      $("#d-log").textContent = "";
      this.loadLog();
    },
    async loadPrompt() {
      const att = this.card?.attempts || 0;
      $("#d-prompt-att").textContent = att ? `(attempt ${att})` : "";
      if (!att) { $("#d-prompt").textContent = "The card has not run yet: no prompt was sent."; return; }
      try {
        const res = await api(`/api/cards/${encodeURIComponent(this.id)}/prompt?attempt=${att}`);
        $("#d-prompt").textContent = res.prompt;
      } catch (err) {
        $("#d-prompt").textContent = err.status === 404 ? `Not available here: ${err.message}` : err.message;
      }
    },
    async loadDiff() {
      const box = $("#d-diff");
      box.textContent = "loading…";
      try {
        const d = await api(`/api/cards/${encodeURIComponent(this.id)}/diff`);
        const files = d.files || [];
        $("#d-diffstat").textContent = `${d.branch || ""} · ${files.length} file(s) · ` +
          `+${files.reduce((a, f) => a + (f.insertions || 0), 0)} −${files.reduce((a, f) => a + (f.deletions || 0), 0)}`;
        const frag = document.createDocumentFragment();
        const lines = (d.patch || "").split("\n");
        for (const line of lines.slice(0, 5000)) {
          const el = document.createElement("div");
          el.className = line.startsWith("diff --git") ? "file" : line.startsWith("@@") ? "hunk"
            : line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : "";
          el.textContent = line || " ";
          frag.append(el);
        }
        box.textContent = "";
        box.append(frag);
        if (lines.length > 5000) box.append(Object.assign(document.createElement("div"), { textContent: `… ${lines.length - 5000} more lines` }));
      } catch (err) {
        box.textContent = `No diff: ${err.message}`;
      }
    },
  };
  function statusColor(s) {
    return { DONE: "--ok", FAILED: "--bad", RETRYING: "--warn", IN_PROGRESS: "--accent", QUEUED: "--info" }[s] || "--neutral";
  }
  function setupDetail() {
    $("#d-close").addEventListener("click", closeDetail);
    $("#d-actions").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action]");
      if (b && detail.id) act(detail.id, b.dataset.action, b);
    });
    const log = $("#d-log");
    log.addEventListener("scroll", () => {
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      detail.follow = atEnd;
      $("#d-follow").hidden = atEnd || Boolean(detail.archived);
    }, { passive: true });
    $("#d-follow").addEventListener("click", () => { detail.follow = true; log.scrollTop = log.scrollHeight; $("#d-follow").hidden = true; });
    $("#d-runs").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-run]");
      if (b) detail.showRunLog(b.dataset.run, b.dataset.attempt);
    });
    $("#d-logsrc").addEventListener("click", (ev) => {
      if (ev.target.id === "d-back-live") { ev.preventDefault(); detail.backToLive(); }
    });
    $("#d-prompt-box").addEventListener("toggle", () => { if ($("#d-prompt-box").open) detail.loadPrompt(); });
  }
  let lastView = "#/board";
  function closeDetail() {
    if (location.hash.startsWith("#/cards/")) location.hash = lastView;
    else detail.close();
  }

  // ---- workers -------------------------------------------------------------------------------
  async function loadWorkers() {
    try {
      const res = await api("/api/workers");
      const showOff = $("#show-offline").checked;
      const online = res.workers.filter((w) => w.status === "online").length;
      $("#workers-count").textContent = online;
      $("#workers-status").textContent = `Celery: ${res.status} · checked ${fmtTime(res.checked_at)}`;
      if (state.view !== "workers") return;
      const link = (id) => `<a href="#/cards/${encodeURIComponent(id)}">${esc(id)}</a>`;
      $("#workers-table tbody").innerHTML = res.workers.filter((w) => showOff || w.status === "online").map((w) => {
        const hb = w.last_heartbeat ? fmtDur(nowS() - tsOf(w.last_heartbeat)) + " ago" : "–";
        return `<tr class="${w.status}"><td class="mono">${esc(w.name)}</td>` +
          `<td class="${w.status === "online" ? "ok" : "muted"}">${w.status}</td><td>${hb}</td>` +
          `<td>${w.active_cards.map(link).join(", ") || "–"}</td><td>${(w.leases || []).map(link).join(", ") || "–"}</td>` +
          `<td class="num">${w.concurrency ?? "–"}</td><td>${(w.queues || []).map(esc).join(", ") || "–"}</td>` +
          `<td class="num">${w.processed}</td></tr>`;
      }).join("") || `<tr><td colspan="8" class="muted">no workers seen</td></tr>`;
    } catch (err) {
      $("#workers-status").textContent = `workers: ${err.message}`;
    }
  }

  // ---- history (server-side paging) ----------------------------------------------------------
  const history = { offset: 0, total: 0 };
  async function loadHistory() {
    const q = new URLSearchParams({ limit: String(HISTORY_PAGE), offset: String(history.offset) });
    const f = state.filters;
    if (f.squad) q.set("squad", f.squad);
    if (f.agent) q.set("agent", f.agent);
    if (f.text) q.set("q", f.text);
    const st = $("#h-status").value || (f.failed ? "failed" : "");
    if (st) q.set("status", st);
    try {
      const res = await api(`/api/runs?${q}`, { raw: true });
      history.total = Number(res.headers.get("X-Total-Count") || 0);
      const runs = await res.json();
      $("#history-table tbody").innerHTML = runs.map((r) => {
        const dur = r.started_at && r.ended_at ? (Date.parse(r.ended_at) - Date.parse(r.started_at)) / 1000 : null;
        const cls = r.status === "succeeded" ? "ok" : (r.status === "failed" || r.status === "lost" ? "bad" : "");
        return `<tr><td>${fmtTime(r.ended_at || r.started_at)}</td><td class="mono"><a href="#/cards/${encodeURIComponent(r.card_id)}">${esc(r.card_id)}</a></td>` +
          `<td>${esc(r.title)}</td><td>${esc(r.squad || "–")}</td><td>${esc(r.agent || "–")}</td><td class="num">${r.attempt}</td>` +
          `<td class="mono">${esc(r.worker || "–")}</td><td class="num">${fmtDur(dur)}</td><td class="num">${r.exit_code ?? "–"}</td>` +
          `<td class="${cls}">${esc(r.status)}</td><td class="err" title="${esc(r.error || "")}">${esc(r.error || "")}</td>` +
          `<td class="num">${r.cost_usd != null ? fmtCost(r.cost_usd) : "–"}</td></tr>`;
      }).join("") || `<tr><td colspan="12" class="muted">no runs match</td></tr>`;
      const end = history.offset + runs.length;
      $("#h-range").textContent = history.total ? `${history.offset + 1}–${end} of ${history.total}` : "0 runs";
      $("#h-prev").disabled = history.offset === 0;
      $("#h-next").disabled = end >= history.total;
    } catch (err) {
      toast(`history: ${err.message}`, true);
    }
  }
  function setupHistory() {
    $("#h-status").addEventListener("change", () => { history.offset = 0; loadHistory(); });
    $("#h-prev").addEventListener("click", () => { history.offset = Math.max(0, history.offset - HISTORY_PAGE); loadHistory(); });
    $("#h-next").addEventListener("click", () => { history.offset += HISTORY_PAGE; loadHistory(); });
  }

  // ---- metrics -------------------------------------------------------------------------------
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  // A small canvas chart: bars (stacked) and/or lines over shared x labels.
  function chart(canvas, labels, series, { yFmt = (v) => String(v), horizontal = false } = {}) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    canvas.width = w * dpr; canvas.height = h * dpr;
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    g.font = "11px system-ui, sans-serif";
    const text = cssVar("--muted"), grid = cssVar("--line");
    const legend = document.querySelector(`.legend[data-for="${canvas.id}"]`);
    if (legend) legend.innerHTML = series.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("");
    if (horizontal) return hbars(g, w, h, labels, series[0], yFmt, text);
    const left = 46, right = 8, top = 8, bottom = 20;
    const pw = w - left - right, ph = h - top - bottom;
    const stackTotals = labels.map((_, i) => series.filter((s) => s.type === "bar").reduce((a, s) => a + (s.values[i] || 0), 0));
    let max = Math.max(0, ...stackTotals, ...series.filter((s) => s.type === "line").flatMap((s) => s.values.filter((v) => v != null)));
    if (max <= 0) max = 1;
    const nice = niceMax(max);
    g.strokeStyle = grid; g.fillStyle = text; g.lineWidth = 1;
    g.textAlign = "right"; g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(w - right, y + 0.5); g.stroke();
      g.fillText(yFmt((nice * i) / 4), left - 4, y);
    }
    const n = labels.length || 1;
    const bw = pw / n;
    const base = new Array(n).fill(0);
    for (const s of series.filter((x) => x.type === "bar")) {
      g.fillStyle = s.color;
      s.values.forEach((v, i) => {
        if (!v) return;
        const bh = (v / nice) * ph;
        const y = top + ph - base[i] - bh;
        g.fillRect(left + i * bw + Math.max(0.5, bw * 0.12), y, Math.max(1, bw * 0.76), bh);
        base[i] += bh;
      });
    }
    for (const s of series.filter((x) => x.type === "line")) {
      g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        const x = left + i * bw + bw / 2, y = top + ph - (v / nice) * ph;
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
      });
      g.stroke();
    }
    g.fillStyle = text; g.textAlign = "center"; g.textBaseline = "top";
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(pw / 70))));
    labels.forEach((l, i) => { if (i % every === 0) g.fillText(l, left + i * bw + bw / 2, top + ph + 5); });
  }
  function hbars(g, w, h, labels, s, fmt, text) {
    const rows = Math.min(labels.length, 8);
    if (!rows) { g.fillStyle = text; g.fillText("no cost recorded in this window", 10, 20); return; }
    const max = Math.max(...s.values.slice(0, rows), 1e-9);
    const rh = Math.min(22, (h - 4) / rows);
    g.textBaseline = "middle";
    for (let i = 0; i < rows; i++) {
      const y = 2 + i * rh;
      g.fillStyle = text; g.textAlign = "right"; g.fillText(labels[i].slice(0, 16), 104, y + rh / 2);
      const bw = ((w - 190) * s.values[i]) / max;
      g.fillStyle = s.color; g.fillRect(110, y + 3, Math.max(1, bw), rh - 6);
      g.fillStyle = text; g.textAlign = "left"; g.fillText(fmt(s.values[i]), 114 + bw, y + rh / 2);
    }
  }
  function niceMax(v) {
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 4, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  async function loadMetrics() {
    const win = Number($("#m-window").value);
    try {
      const [series, now] = await Promise.all([api(`/api/metrics/series?window_s=${win}`), api("/api/metrics")]);
      if (state.view !== "metrics") return;
      const labels = series.buckets.map((b) => {
        const d = new Date(b.start);
        return series.bucket_s >= 86400 ? d.toLocaleDateString([], { month: "short", day: "numeric" })
          : series.window_s > 86400 ? `${d.toLocaleDateString([], { weekday: "short" })} ${d.getHours()}h`
            : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
      });
      const perMin = series.bucket_s / 60;
      const tile = (v, k) => `<div class="tile"><b>${v}</b><span>${k}</span></div>`;
      const settled = series.succeeded + series.failed;
      $("#tiles").innerHTML = [
        tile(series.succeeded, "succeeded"), tile(series.failed, "failed"), tile(series.retried, "retries"),
        tile(`${(series.error_rate * 100).toFixed(1)}%`, "error rate"),
        tile((settled / (series.window_s / 60)).toFixed(2), "cards / minute"),
        tile(fmtDur(series.run_time_p50), "run time p50"), tile(fmtDur(series.run_time_p95), "run time p95"),
        tile(now.queue_depth ?? now.counts_by_status.QUEUED ?? 0, "queue depth now"),
        tile(fmtCost(now.total_cost_usd), "total cost"),
      ].join("");
      const ok = cssVar("--ok"), bad = cssVar("--bad"), warn = cssVar("--warn"), acc = cssVar("--accent"), info = cssVar("--info");
      chart($("#c-throughput"), labels, [
        { name: "succeeded / min", type: "bar", color: ok, values: series.buckets.map((b) => b.succeeded / perMin) },
        { name: "failed / min", type: "bar", color: bad, values: series.buckets.map((b) => b.failed / perMin) },
      ], { yFmt: (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)) });
      chart($("#c-runtime"), labels, [
        { name: "p50", type: "line", color: acc, values: series.buckets.map((b) => b.run_time_p50) },
        { name: "p95", type: "line", color: warn, values: series.buckets.map((b) => b.run_time_p95) },
      ], { yFmt: (v) => fmtDur(v) });
      const maxRetried = Math.max(1, ...series.buckets.map((b) => b.retried));
      chart($("#c-errors"), labels, [
        { name: "error rate %", type: "line", color: bad, values: series.buckets.map((b) => (b.error_rate == null ? null : b.error_rate * 100)) },
        { name: `retries (scaled, max ${maxRetried})`, type: "bar", color: warn, values: series.buckets.map((b) => (b.retried / maxRetried) * 100) },
      ], { yFmt: (v) => `${v.toFixed(0)}%` });
      chart($("#c-queue"), labels, [
        { name: "cards waiting", type: "line", color: info, values: series.buckets.map((b) => b.queue_depth) },
      ], { yFmt: (v) => v.toFixed(0) });
      chart($("#c-costday"), series.cost_per_day.map((d) => d.day.slice(5)), [
        { name: "USD", type: "bar", color: acc, values: series.cost_per_day.map((d) => d.cost_usd) },
      ], { yFmt: (v) => `$${v.toFixed(2)}` });
      const paid = series.cost_per_squad.filter((s) => s.cost_usd > 0);
      chart($("#c-costsquad"), paid.map((s) => s.squad), [
        { name: "USD", type: "bar", color: info, values: paid.map((s) => s.cost_usd) },
      ], { yFmt: (v) => `$${v.toFixed(2)}`, horizontal: true });
      $("#m-updated").textContent = `updated ${fmtTime(series.generated_at)}`;
    } catch (err) {
      $("#m-updated").textContent = `metrics: ${err.message}`;
    }
  }

  // ---- routing -------------------------------------------------------------------------------
  let pollTimer = null;
  function route() {
    const h = location.hash || "#/board";
    const m = h.match(/^#\/cards\/(.+)$/);
    if (m) {
      const id = decodeURIComponent(m[1]);
      if (state.detailId !== id) detail.open(id);
      return;
    }
    if (state.detailId) detail.close();
    const view = (h.match(/^#\/(board|workers|history|metrics)$/) || [])[1] || "board";
    lastView = `#/${view}`;
    state.view = view;
    for (const v of ["board", "workers", "history", "metrics"]) {
      $(`#view-${v}`).hidden = v !== view;
      const tab = document.querySelector(`.tabs a[data-view="${v}"]`);
      if (v === view) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
    }
    $("#select-failed").hidden = $("#bulk-retry").hidden = view !== "board";
    $("#f-status").hidden = view !== "board";
    clearInterval(pollTimer);
    const poll = { workers: [loadWorkers, 5000], history: [loadHistory, 15000], metrics: [loadMetrics, 15000] }[view];
    if (poll) { poll[0](); pollTimer = setInterval(poll[0], poll[1]); }
  }

  function setupKeys() {
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && state.detailId && !document.querySelector("dialog[open]")) { ev.preventDefault(); closeDetail(); }
      else if (ev.key === "/" && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName)) { ev.preventDefault(); $("#f-text").focus(); }
    });
  }

  // ---- start ---------------------------------------------------------------------------------
  window.__squad = { state, firstRenderMs: null };
  document.addEventListener("DOMContentLoaded", () => {
    buildBoard();
    setupToken(); setupFilters(); setupPause(); setupBoardEvents(); setupDetail(); setupHistory(); setupReject(); setupKeys();
    $("#m-window").addEventListener("change", loadMetrics);
    $("#show-offline").addEventListener("change", loadWorkers);
    window.addEventListener("hashchange", route);
    window.addEventListener("resize", () => { if (state.view === "metrics") loadMetrics(); });
    window.addEventListener("online", () => feed.restart());
    window.addEventListener("offline", () => setConn("offline"));
    route();
    setConn("connecting");
    feed.connect();
    setInterval(tick, 1000);
    setInterval(() => { if (state.view !== "workers") loadWorkers(); }, 15000);
  });
})();

// The board: lanes and card elements (bar, times, buttons), sorted and windowed so a big board stays light; the 1 s clock.

import { CANCELLABLE, FINISHED, LANES, RETRYABLE, RUNNING, state } from "./state.js";
import { $, esc, fmtCost, fmtDur, nowS, tsOf } from "./util.js";
import { matches } from "./filters.js";
import { dueText, elapsedOf, maxAttempts } from "./cardtimes.js";
import { act, bulkRetry, toggleSelect } from "./actions.js";
import { detail } from "./drawer.js";

const STALL_WARN_S = 120;          // "last output" turns orange after this long
export const LANE_WINDOW = 16;     // cards per lane in the DOM at first (a screen shows about eight)
const LANE_STEP = 200;             // "show more" adds this many
const LANE_SCROLL_STEP = 32;       // scrolling near a lane's end adds this many

// ---- board rendering -----------------------------------------------------------------------
function laneOf(card) { return LANES.includes(card.status) ? card.status : "TODO"; }
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

// An agent's question (NEEDS_INPUT): its choices as buttons, and a box for any other answer.
function askHtml(c) {
  if (c.status !== "NEEDS_INPUT" || !c.question) return "";
  const choices = (Array.isArray(c.choices) ? c.choices : []).map((ch) =>
    `<button type="button" data-action="answer" data-answer="${esc(ch)}">${esc(ch)}</button>`).join("");
  return `<div class="c-ask"><div class="c-q">${esc(c.question)}</div>${choices}` +
    `<input type="text" class="c-answer" maxlength="16384" aria-label="Answer to ${esc(c.card_id)}">` +
    `<button type="button" data-action="answer">Answer</button></div>`;
}

// Sub-cards (docs/agents.md): a child names its parent; a WAITING parent lists its children.
function familyHtml(c) {
  const parts = [];
  if (c.parent) parts.push(`sub-card of ${esc(c.parent)}`);
  if (c.status === "WAITING") {
    const kids = [...state.cards.values()].filter((k) => k.parent === c.card_id);
    const done = kids.filter((k) => k.status === "DONE").length;
    parts.push(`waits for sub-cards ${done}/${kids.length} done: ` +
      kids.map((k) => `<span class="c-kid" data-kid-status="${esc(k.status)}">${esc(k.card_id)}</span>`).join(" "));
  }
  return parts.length ? `<div class="c-family">${parts.join(" · ")}</div>` : "";
}

// The verify gate's verdict on the latest run (docs/workspaces.md "Verify"): passed or failed.
function verifyBadge(c) {
  if (c.verify_exit == null) return "";
  const ok = c.verify_exit === 0;
  return `<span class="verify ${ok ? "ok" : "bad"}" data-verify="${ok ? "passed" : "failed"}" ` +
    `title="verify exit ${esc(c.verify_exit)}">verify ${ok ? "passed" : "failed"}</span>`;
}

function cardInner(c) {
  const p = Math.max(0, Math.min(100, c.progress | 0));
  const step = c.current_step ? esc(c.current_step) : "";
  const sel = RETRYABLE.has(c.status)
    ? `<input type="checkbox" class="sel" aria-label="Select ${esc(c.card_id)}"${state.selected.has(c.card_id) ? " checked" : ""}>` : "";
  const meta = [c.squad, c.agent].filter(Boolean).map(esc).join(" · ");
  const att = c.attempts ? `attempt ${c.attempts}/${maxAttempts(c)}` : "not run yet";
  const err = (c.status === "FAILED" || c.status === "RETRYING" || c.status === "BLOCKED" || c.status === "LANDING") && c.last_error
    ? `<div class="c-err" title="${esc(c.last_error)}">${esc(c.last_error)}</div>` : "";
  const due = c.status === "RETRYING" ? `<div class="c-due">${esc(dueText(c))}</div>` : "";
  return `<div class="c-head">${sel}<span class="c-id">${esc(c.card_id)}</span>` +
    `<span class="prio${c.priority >= 8 ? " hi" : ""}" title="priority ${esc(c.priority)}">P${esc(c.priority)}</span>${verifyBadge(c)}</div>` +
    `<div class="c-title">${esc(c.title)}</div>` +
    `<div class="c-meta">${meta ? meta + " · " : ""}${esc(att)}</div>` +
    `<div class="bar" role="progressbar" aria-label="Progress of ${esc(c.card_id)}" aria-valuemin="0" aria-valuemax="100" ` +
    `aria-valuenow="${p}" aria-valuetext="${p}%${step ? " " + step : ""}"><i></i></div>` +
    `<div class="c-step">${p}%${step ? " · " + step : ""}</div>` +
    `<div class="c-time">${timeText(c)}</div>${due}${err}${familyHtml(c)}${askHtml(c)}` +
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

export function buildBoard() {
  const board = $("#view-board");
  board.textContent = "";
  state.lanes.clear();
  for (const lane of LANES) {
    const el = document.createElement("section");
    el.className = "lane";
    el.dataset.lane = lane;
    el.setAttribute("aria-label", `${lane} lane`);
    el.innerHTML = `<div class="lane-head"><span class="dot"></span><span class="lane-name">${esc(lane.replace("_", " "))}</span>` +
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
export function syncLane(L) {
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
    for (const el of body.children) { state.els.set(el.dataset.cardId, el); el._lane = L.name; paintBar(el); }
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
  paintBar(el);
  state.els.set(c.card_id, el);
  return el;
}

export function renderAll() {
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
export function redrawMany(touched) {
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
      paintBar(el);
      el._time = undefined;
    } else {
      drawProgress(el, c);
    }
  }
  if (dirty.size) updateCounts();
}
export function redraw(id, full) { redrawMany(new Map([[id, full]])); }

// The bar's fill is scaled through the CSS object model: the page's Content-Security-Policy refuses
// style attributes written as markup.
function paintBar(el) {
  const bar = el.querySelector(".bar");
  if (bar) bar.firstElementChild.style.transform = `scaleX(${Number(bar.getAttribute("aria-valuenow")) / 100})`;
}
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

// The filters changed: every lane back to its first window, redrawn, counted.
export function refilter() {
  for (const L of state.lanes.values()) { L.limit = LANE_WINDOW; syncLane(L); }
  updateCounts();
}

export function updateCounts() {
  let shown = 0;
  for (const [lane, L] of state.lanes) {
    shown += L.matching;
    L.el.hidden = (lane === "REVIEW" && L.ids.length === 0 && !state.hasReview) ||
      Boolean(state.filters.status && state.filters.status !== lane);
    // An empty lane folds to a narrow column (its name and count stay), so the lanes that hold cards
    // fit the screen: after a run, DONE is on the first screen, not scrolled off to the right.
    L.el.classList.toggle("collapsed", L.matching === 0);
  }
  const running = state.lanes.get("IN_PROGRESS").ids.length;
  $("#summary").textContent = `${shown} of ${state.cards.size} cards · ${running} running`;
}

export function setupBoardEvents() {
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
    if (ev.target.closest(".c-ask")) return; // typing an answer does not open the card
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

// ---- clock: elapsed, last output, retry countdowns ----------------------------------------
// Visits the running and retrying cards in the page, skips those the browser is not rendering
// (off screen, see setupBoardEvents) and writes only texts that changed.
export function tick() {
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

// The page's copy of every card: the board read in pages, events applied once per frame, changed cards re-read; Pause.

import { FINISHED, RUNNING, state } from "./state.js";
import { $, nowS, toast, tsOf } from "./util.js";
import { api } from "./http.js";
import { fillOptions, noteOptions } from "./filters.js";
import { loadWorkers } from "./workers.js";

// The views that draw the cards (board.js, drawer.js), registered by main.js: the cards' copy never
// imports what draws it.
export const views = { redraw: null, redrawMany: null, renderAll: null, updateCounts: null, detail: null };

const REFRESH_BATCH = 100;         // cards re-read per request after status changes
const BOARD_PAGE = 1000;           // cards per /api/board request (the API's largest page)
const REFRESH_DELAY_MS = 300;
const MAX_PAUSED_EVENTS = 50000;   // beyond this, resuming re-reads the board instead
const READ_ADDED_MAX = 1000;        // new cards read by id; more waiting at once: the board is read again

// ---- applying data -------------------------------------------------------------------------
function prepare(c, fetchedAt) {
  c._elapsed = c.elapsed ?? null;
  c._elapsedAt = fetchedAt;
  c._lastOut = tsOf(c.last_output_at);
  c._updated = tsOf(c.updated_at) || 0;
  return c;
}
// A card read from the API: replaces the local one unless events already showed a newer state.
export function applyCard(fresh, full) {
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
  views.redraw(c.card_id, full);
  if (state.detailId === c.card_id) views.detail.update(c);
}

// Cards added together (an `added` event names up to 1,000): each unknown one read by id, or, when
// more wait to be read than that, the whole board once (a 20,000-card import reads 20 pages, not
// 200 batches of 100).
function readAdded(ids) {
  const unknown = ids.filter((id) => !state.cards.has(id));
  if (state.reloadTimer || state.refresh.size + unknown.length > READ_ADDED_MAX) {
    if (!state.reloadTimer) {
      state.reloadTimer = setTimeout(() => { state.reloadTimer = null; state.refresh.clear(); reloadBoard(); },
                                     REFRESH_DELAY_MS);
    }
    return;
  }
  unknown.forEach(markRefresh);
}

export function markRefresh(id) {
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
export function onEvent(ev) {
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
  views.redrawMany(touched);
  if (state.detailId && touched.has(state.detailId)) views.detail.update(state.cards.get(state.detailId));
}

function applyEvent(ev, touched, preload = false) {
  if (ev.type === "added") { readAdded(Array.isArray(ev.card_ids) ? ev.card_ids : []); return; }
  const id = ev.card_id;
  if (!id) return;
  const c = state.cards.get(id);
  if (!c) { if (ev.type !== "log") markRefresh(id); return; }
  const ts = tsOf(ev.timestamp) || nowS();
  if (ev.type === "log") {
    c._lastOut = Math.max(c._lastOut || 0, ts);
    if (state.detailId === id) views.detail.poke();
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
    if (ev.status === "QUEUED" || (ev.status === "IN_PROGRESS" && prev !== "IN_PROGRESS" && prev !== "NEEDS_INPUT")) {
      c.progress = 0; c.current_step = null; c._elapsed = 0; c._elapsedAt = performance.now();
    }
    if (ev.status === "DONE") c.progress = 100;
    c.updated_at = ev.timestamp || c.updated_at;
    if (c.status === "REVIEW") state.hasReview = true;
    if (c.status !== "NEEDS_INPUT") { c.question = null; c.choices = null; }
    touched.set(id, true);
    markRefresh(id);
  } else if (ev.type === "question") { // an agent asks a person (docs/agents.md): the answer box shows it
    c.question = ev.question;
    try { c.choices = ev.choices ? JSON.parse(ev.choices) : null; } catch { c.choices = null; }
    touched.set(id, true);
  } else if (ev.type === "answer") {
    c.question = null; c.choices = null;
    touched.set(id, true);
    markRefresh(id);
  }
}

function afterLoad() {
  state.loaded = true;
  const touched = new Map();
  for (const ev of state.preload) applyEvent(ev, touched, true);
  state.preload = [];
  views.redrawMany(touched);
  views.updateCounts();
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

export async function loadBoard() {
  const t0 = performance.now();
  const cards = await readBoard();
  const at = performance.now();
  window.__squad.timing = { start: t0, fetched: at };
  state.cards.clear();
  for (const c of cards) { prepare(c, at); state.cards.set(c.card_id, c); noteOptions(c); }
  fillOptions();
  window.__squad.timing.prepared = performance.now();
  views.renderAll();
  afterLoad();
  document.body.dataset.loaded = "true";
  window.__squad.timing.rendered = performance.now();
  if (state.detailId) views.detail.open(state.detailId);
  if (state.view !== "workers") loadWorkers(); // after the board: it does not compete with it
}

export async function reloadBoard() {
  try {
    const cards = await readBoard();
    const at = performance.now();
    state.cards.clear();
    for (const c of cards) { prepare(c, at); state.cards.set(c.card_id, c); noteOptions(c); }
    views.renderAll();
  } catch (err) { toast(`Could not read the board: ${err.message}`, true); }
}

// ---- pause ---------------------------------------------------------------------------------
function showPause() {
  const b = $("#pause");
  b.setAttribute("aria-pressed", String(state.paused));
  b.textContent = state.paused ? `Resume (${state.pausedEvents.length} waiting)` : "Pause";
}
export function setupPause() {
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

// The one state object and the status sets, shared by every module (bench/dashboard.py reads it as window.__squad.state).

// The statuses and their facts come from GET /api/statuses (the store's own table, in lane order):
// setStatuses() replaces these, which stand only until the page has read them (or if it cannot).
export let LANES = ["TODO", "BLOCKED", "QUEUED", "IN_PROGRESS", "RETRYING", "REVIEW", "FAILED", "CANCELLED", "DONE"];
export let FINISHED = new Set(["DONE", "FAILED", "CANCELLED"]);
export let RUNNING = new Set(["IN_PROGRESS"]);
export let CANCELLABLE = new Set(["QUEUED", "IN_PROGRESS", "RETRYING"]);
export let RETRYABLE = new Set(["FAILED", "CANCELLED"]);
export const TOKEN_KEY = "squad.token";

export function setStatuses(rows) {
  const where = (fact) => new Set(rows.filter((r) => r[fact]).map((r) => r.status));
  LANES = rows.map((r) => r.status);
  FINISHED = where("final");
  RUNNING = where("running");
  CANCELLABLE = where("cancellable");
  RETRYABLE = where("retryable");
}

// ---- state ---------------------------------------------------------------------------------
export const state = {
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
  reloadTimer: null,
  frame: 0,
  filters: { text: "", squad: "", agent: "", status: "", failed: false },
  view: "board",
  lastView: "#/board",   // the view the drawer returns to
  detailId: null,
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  squads: new Set(),
  agents: new Set(),
  defaultMaxRetries: null,
};

/* Squad dashboard: native ES modules, no build step, no dependencies. This one starts the page.
 *
 * Data: GET /api/board once for the board (every card in its compact shape, pages of 1,000 read
 * concurrently), then the /ws/tasks event feed. Events are queued and applied once per animation
 * frame; only the cards they touch are redrawn (a progress event changes a bar's scale and two
 * texts, a status event moves one card between lanes). Cards whose status changed are re-read in
 * small batches (`/api/board?card_id=…`) for the fields events do not carry (next attempt time,
 * cost). After a dropped socket the page reconnects with `?since=<last event id>`, so it misses
 * nothing still in the stream.
 *
 * Modules: state (shared state, the status sets read from GET /api/statuses), util (helpers), http (HTTP, token), sync (the cards:
 * board read, events applied), live (the socket), board, filters, actions, drawer, workers,
 * history, metrics, router (views by URL hash), cardtimes (attempts and times of a card). A module
 * imports only the ones below it — state, util < http < cardtimes, filters, workers, history,
 * metrics < sync < actions, live < drawer < board < router < main — and what a lower one must call
 * above it (redraw a card, restart the feed, refilter) is handed to it here; no module runs anything
 * when it is imported, everything starts on DOMContentLoaded.
 */

import { setStatuses, state } from "./state.js";
import { $ } from "./util.js";
import { api, loadWho, onTokenChange, setupToken } from "./http.js";
import { setupPause, views } from "./sync.js";
import { feed, setConn } from "./live.js";
import { buildBoard, redraw, redrawMany, refilter, renderAll, setupBoardEvents, tick, updateCounts } from "./board.js";
import { setupFilters } from "./filters.js";
import { setupReject } from "./actions.js";
import { detail, setupDetail } from "./drawer.js";
import { loadWorkers } from "./workers.js";
import { history, loadHistory, setupHistory } from "./history.js";
import { loadMetrics } from "./metrics.js";
import { route, setupKeys } from "./router.js";

window.__squad = { state, firstRenderMs: null };
document.addEventListener("DOMContentLoaded", async () => {
  // Modules import only the ones below them; what a lower one must call above it is handed to it here.
  Object.assign(views, { redraw, redrawMany, renderAll, updateCounts, detail });
  onTokenChange(() => { feed.restart(); loadWho(); });
  setupToken();
  try {
    setStatuses(await api("/api/statuses"));  // lanes and buttons as the store's status table says
  } catch (err) {
    console.warn("statuses not read; using the built-in ones:", err.message);
  }
  loadWho();
  buildBoard();
  setupFilters(() => {
    refilter();
    if (state.view === "history") { history.offset = 0; loadHistory(); }
  });
  setupPause(); setupBoardEvents(); setupDetail(); setupHistory(); setupReject(); setupKeys();
  $("#m-window").addEventListener("change", loadMetrics);
  $("#show-offline").addEventListener("change", loadWorkers);
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => { if (state.view === "metrics") loadMetrics(); });
  window.addEventListener("online", () => feed.restart());
  window.addEventListener("offline", () => setConn("offline"));
  route();
  setConn("connecting");
  feed.start();
  setInterval(tick, 1000);
  setInterval(() => { if (state.view !== "workers") loadWorkers(); }, 15000);
});

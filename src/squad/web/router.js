// Views by URL hash, so each can be linked and reloaded: what shows, what polls, the drawer; keyboard shortcuts.

import { state } from "./state.js";
import { $ } from "./util.js";
import { closeDetail, detail } from "./drawer.js";
import { loadWorkers } from "./workers.js";
import { loadHistory } from "./history.js";
import { loadMetrics } from "./metrics.js";

// ---- routing -------------------------------------------------------------------------------
let pollTimer = null;
export function route() {
  const h = location.hash || "#/board";
  const m = h.match(/^#\/cards\/(.+)$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    if (state.detailId !== id) detail.open(id);
    return;
  }
  if (state.detailId) detail.close();
  const view = (h.match(/^#\/(board|workers|history|metrics)$/) || [])[1] || "board";
  state.lastView = `#/${view}`;
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

export function setupKeys() {
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && state.detailId && !document.querySelector("dialog[open]")) { ev.preventDefault(); closeDetail(); }
    else if (ev.key === "/" && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName)) { ev.preventDefault(); $("#f-text").focus(); }
  });
}

// The filter bar: which cards match and the squad and agent options, for the lanes and (squad, agent, text) history.

import { LANES, state } from "./state.js";
import { $, esc } from "./util.js";

export function matches(c) {
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
export function noteOptions(c) {
  let changed = false;
  if (c.squad && !state.squads.has(c.squad)) { state.squads.add(c.squad); changed = true; }
  if (c.agent && !state.agents.has(c.agent)) { state.agents.add(c.agent); changed = true; }
  if (c.status === "REVIEW") state.hasReview = true;
  return changed;
}
export function fillOptions() {
  for (const [sel, values, all] of [["#f-squad", state.squads, "All squads"], ["#f-agent", state.agents, "All agents"]]) {
    const el = $(sel);
    const cur = el.value;
    el.innerHTML = `<option value="">${all}</option>` + [...values].sort().map((v) => `<option>${esc(v)}</option>`).join("");
    el.value = cur;
  }
}
// `applyFilters` redraws what the filters select (main.js: the lanes, and the history when it shows).
export function setupFilters(applyFilters) {
  $("#f-status").innerHTML = `<option value="">All statuses</option>` + LANES.map((l) => `<option>${esc(l)}</option>`).join("");
  $("#filters").addEventListener("submit", (ev) => ev.preventDefault()); // the bar filters as you type
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

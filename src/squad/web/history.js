// The history view: every run, newest first, paged on the server (runs outgrow a page) and filtered by the filter bar.

import { state } from "./state.js";
import { $, esc, fmtCost, fmtDur, fmtTime, toast } from "./util.js";
import { api } from "./http.js";

const HISTORY_PAGE = 50;

// Paging state. A module that uses it must import it: without the import, `history` is window.history.
export const history = { offset: 0, total: 0 };
export async function loadHistory() {
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
      return `<tr><td>${esc(fmtTime(r.ended_at || r.started_at))}</td><td class="mono"><a href="#/cards/${esc(encodeURIComponent(r.card_id))}">${esc(r.card_id)}</a></td>` +
        `<td>${esc(r.title)}</td><td>${esc(r.squad || "–")}</td><td>${esc(r.agent || "–")}</td><td class="num">${esc(r.attempt)}</td>` +
        `<td class="mono">${esc(r.worker || "–")}</td><td class="num">${fmtDur(dur)}</td><td class="num">${esc(r.exit_code ?? "–")}</td>` +
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
export function setupHistory() {
  $("#h-status").addEventListener("change", () => { history.offset = 0; loadHistory(); });
  $("#h-prev").addEventListener("click", () => { history.offset = Math.max(0, history.offset - HISTORY_PAGE); loadHistory(); });
  $("#h-next").addEventListener("click", () => { history.offset += HISTORY_PAGE; loadHistory(); });
}

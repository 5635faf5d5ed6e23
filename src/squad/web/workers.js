// The workers view: each Celery worker's state, heartbeat, active cards, leases and queues (polled, see router.js).

import { state } from "./state.js";
import { $, esc, fmtDur, fmtTime, nowS, tsOf } from "./util.js";
import { api } from "./http.js";

export async function loadWorkers() {
  try {
    const res = await api("/api/workers");
    const showOff = $("#show-offline").checked;
    const online = res.workers.filter((w) => w.status === "online").length;
    $("#workers-count").textContent = online;
    $("#workers-status").textContent = `Celery: ${res.status} · checked ${fmtTime(res.checked_at)}`;
    if (state.view !== "workers") return;
    const link = (id) => `<a href="#/cards/${esc(encodeURIComponent(id))}">${esc(id)}</a>`;
    $("#workers-table tbody").innerHTML = res.workers.filter((w) => showOff || w.status === "online").map((w) => {
      const hb = w.last_heartbeat ? fmtDur(nowS() - tsOf(w.last_heartbeat)) + " ago" : "–";
      return `<tr class="${esc(w.status)}"><td class="mono">${esc(w.name)}</td>` +
        `<td class="${w.status === "online" ? "ok" : "muted"}">${esc(w.status)}</td><td>${esc(hb)}</td>` +
        `<td>${w.active_cards.map(link).join(", ") || "–"}</td><td>${(w.leases || []).map(link).join(", ") || "–"}</td>` +
        `<td class="num">${esc(w.concurrency ?? "–")}</td><td>${(w.queues || []).map(esc).join(", ") || "–"}</td>` +
        `<td class="num">${esc(w.processed)}</td></tr>`;
    }).join("") || `<tr><td colspan="8" class="muted">no workers seen</td></tr>`;
  } catch (err) {
    $("#workers-status").textContent = `workers: ${err.message}`;
  }
}

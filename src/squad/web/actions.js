// What a card's buttons send (retry, cancel, approve, reject, bulk retry): one place for the board and the drawer.

import { state } from "./state.js";
import { $, toast } from "./util.js";
import { api } from "./http.js";
import { applyCard, markRefresh } from "./sync.js";

// ---- selection and bulk retry --------------------------------------------------------------
function updateBulk() {
  const btn = $("#bulk-retry");
  btn.textContent = `Retry selected (${state.selected.size})`;
  btn.disabled = state.selected.size === 0;
}
export function toggleSelect(id, on) {
  if (on) state.selected.add(id); else state.selected.delete(id);
  const el = state.els.get(id);
  if (el) {
    el.classList.toggle("selected", on);
    const box = el.querySelector(".sel");
    if (box) box.checked = on;
  }
  updateBulk();
}
export async function bulkRetry() {
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
export async function act(id, action, button) {
  if (action === "reject") { openReject(id); return; }
  if (action === "answer") { await answer(id, button); return; }
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
// The answer to a NEEDS_INPUT card's question: a choice button's text, or what the box holds.
async function answer(id, button) {
  const box = button ? button.closest(".c-ask") : null;
  const text = (button && button.dataset.answer !== undefined ? button.dataset.answer
    : (box ? box.querySelector(".c-answer").value : "")).trim();
  if (!text) { toast(`answer ${id}: type an answer first`, true); return; }
  if (button) button.disabled = true;
  try {
    const res = await api(`/api/cards/${encodeURIComponent(id)}/answer`, { method: "POST", body: { answer: text } });
    toast(res.message || `${id} answered`);
    markRefresh(id);
  } catch (err) {
    toast(`answer ${id}: ${err.message}`, true);
    if (button) button.disabled = false;
  }
}

let rejectId = null;
function openReject(id) {
  rejectId = id;
  $("#reject-feedback").value = "";
  $("#reject-dialog").showModal();
}
export function setupReject() {
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

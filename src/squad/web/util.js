// Helpers every module uses ($, esc, time, duration and cost formats, toasts): one copy, so every view escapes alike.

export const $ = (sel, root = document) => root.querySelector(sel);
export const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch]));
export const nowS = () => Date.now() / 1000;
export const tsOf = (iso) => (iso ? Date.parse(iso) / 1000 : null);

export function fmtDur(s) {
  if (s == null || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}
export const fmtCost = (v) => (v ? `$${v < 1 ? v.toFixed(3) : v.toFixed(2)}` : "$0");
export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const today = new Date();
  const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return d.toDateString() === today.toDateString() ? t : `${d.toLocaleDateString()} ${t}`;
}

// ---- toasts --------------------------------------------------------------------------------
export function toast(text, bad = false) {
  const el = document.createElement("div");
  el.className = bad ? "toast bad" : "toast";
  el.textContent = text;
  $("#toasts").append(el);
  setTimeout(() => el.remove(), bad ? 7000 : 3500);
}

// The metrics view: tiles, and charts drawn on <canvas> by the few functions here, so the page needs no chart library.

import { state } from "./state.js";
import { $, esc, fmtCost, fmtDur, fmtTime } from "./util.js";
import { api } from "./http.js";

function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
// A small canvas chart: bars (stacked) and/or lines over shared x labels.
function chart(canvas, labels, series, { yFmt = (v) => String(v), horizontal = false } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui, sans-serif";
  const text = cssVar("--muted"), grid = cssVar("--line");
  const legend = document.querySelector(`.legend[data-for="${canvas.id}"]`);
  if (legend) {
    legend.textContent = "";
    for (const s of series) {
      const swatch = document.createElement("i");
      swatch.style.background = s.color;  // CSSOM: the Content-Security-Policy refuses style attributes in markup
      const item = document.createElement("span");
      item.append(swatch, s.name);
      legend.append(item);
    }
  }
  if (horizontal) return hbars(g, w, h, labels, series[0], yFmt, text);
  const left = 46, right = 8, top = 8, bottom = 20;
  const pw = w - left - right, ph = h - top - bottom;
  const stackTotals = labels.map((_, i) => series.filter((s) => s.type === "bar").reduce((a, s) => a + (s.values[i] || 0), 0));
  let max = Math.max(0, ...stackTotals, ...series.filter((s) => s.type === "line").flatMap((s) => s.values.filter((v) => v != null)));
  if (max <= 0) max = 1;
  const nice = niceMax(max);
  g.strokeStyle = grid; g.fillStyle = text; g.lineWidth = 1;
  g.textAlign = "right"; g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = top + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(w - right, y + 0.5); g.stroke();
    g.fillText(yFmt((nice * i) / 4), left - 4, y);
  }
  const n = labels.length || 1;
  const bw = pw / n;
  const base = new Array(n).fill(0);
  for (const s of series.filter((x) => x.type === "bar")) {
    g.fillStyle = s.color;
    s.values.forEach((v, i) => {
      if (!v) return;
      const bh = (v / nice) * ph;
      const y = top + ph - base[i] - bh;
      g.fillRect(left + i * bw + Math.max(0.5, bw * 0.12), y, Math.max(1, bw * 0.76), bh);
      base[i] += bh;
    });
  }
  for (const s of series.filter((x) => x.type === "line")) {
    g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v == null) { pen = false; return; }
      const x = left + i * bw + bw / 2, y = top + ph - (v / nice) * ph;
      if (pen) g.lineTo(x, y); else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
  }
  g.fillStyle = text; g.textAlign = "center"; g.textBaseline = "top";
  const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(pw / 70))));
  labels.forEach((l, i) => { if (i % every === 0) g.fillText(l, left + i * bw + bw / 2, top + ph + 5); });
}
function hbars(g, w, h, labels, s, fmt, text) {
  const rows = Math.min(labels.length, 8);
  if (!rows) { g.fillStyle = text; g.fillText("no cost recorded in this window", 10, 20); return; }
  const max = Math.max(...s.values.slice(0, rows), 1e-9);
  const rh = Math.min(22, (h - 4) / rows);
  g.textBaseline = "middle";
  for (let i = 0; i < rows; i++) {
    const y = 2 + i * rh;
    g.fillStyle = text; g.textAlign = "right"; g.fillText(labels[i].slice(0, 16), 104, y + rh / 2);
    const bw = ((w - 190) * s.values[i]) / max;
    g.fillStyle = s.color; g.fillRect(110, y + 3, Math.max(1, bw), rh - 6);
    g.fillStyle = text; g.textAlign = "left"; g.fillText(fmt(s.values[i]), 114 + bw, y + rh / 2);
  }
}
function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
export async function loadMetrics() {
  const win = Number($("#m-window").value);
  try {
    const [series, now] = await Promise.all([api(`/api/metrics/series?window_s=${win}`), api("/api/metrics")]);
    if (state.view !== "metrics") return;
    const labels = series.buckets.map((b) => {
      const d = new Date(b.start);
      return series.bucket_s >= 86400 ? d.toLocaleDateString([], { month: "short", day: "numeric" })
        : series.window_s > 86400 ? `${d.toLocaleDateString([], { weekday: "short" })} ${d.getHours()}h`
          : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
    });
    const perMin = series.bucket_s / 60;
    const tile = (v, k) => `<div class="tile"><b>${esc(v)}</b><span>${esc(k)}</span></div>`;
    const settled = series.succeeded + series.failed;
    $("#tiles").innerHTML = [
      tile(series.succeeded, "succeeded"), tile(series.failed, "failed"), tile(series.retried, "retries"),
      tile(`${(series.error_rate * 100).toFixed(1)}%`, "error rate"),
      tile((settled / (series.window_s / 60)).toFixed(2), "cards / minute"),
      tile(fmtDur(series.run_time_p50), "run time p50"), tile(fmtDur(series.run_time_p95), "run time p95"),
      tile(now.queue_depth ?? now.counts_by_status.QUEUED ?? 0, "queue depth now"),
      tile(fmtCost(now.total_cost_usd), "total cost"),
    ].join("");
    const ok = cssVar("--ok"), bad = cssVar("--bad"), warn = cssVar("--warn"), acc = cssVar("--accent"), info = cssVar("--info");
    chart($("#c-throughput"), labels, [
      { name: "succeeded / min", type: "bar", color: ok, values: series.buckets.map((b) => b.succeeded / perMin) },
      { name: "failed / min", type: "bar", color: bad, values: series.buckets.map((b) => b.failed / perMin) },
    ], { yFmt: (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)) });
    chart($("#c-runtime"), labels, [
      { name: "p50", type: "line", color: acc, values: series.buckets.map((b) => b.run_time_p50) },
      { name: "p95", type: "line", color: warn, values: series.buckets.map((b) => b.run_time_p95) },
    ], { yFmt: (v) => fmtDur(v) });
    const maxRetried = Math.max(1, ...series.buckets.map((b) => b.retried));
    chart($("#c-errors"), labels, [
      { name: "error rate %", type: "line", color: bad, values: series.buckets.map((b) => (b.error_rate == null ? null : b.error_rate * 100)) },
      { name: `retries (scaled, max ${maxRetried})`, type: "bar", color: warn, values: series.buckets.map((b) => (b.retried / maxRetried) * 100) },
    ], { yFmt: (v) => `${v.toFixed(0)}%` });
    chart($("#c-queue"), labels, [
      { name: "cards waiting", type: "line", color: info, values: series.buckets.map((b) => b.queue_depth) },
    ], { yFmt: (v) => v.toFixed(0) });
    chart($("#c-costday"), series.cost_per_day.map((d) => d.day.slice(5)), [
      { name: "USD", type: "bar", color: acc, values: series.cost_per_day.map((d) => d.cost_usd) },
    ], { yFmt: (v) => `$${v.toFixed(2)}` });
    const paid = series.cost_per_squad.filter((s) => s.cost_usd > 0);
    chart($("#c-costsquad"), paid.map((s) => s.squad), [
      { name: "USD", type: "bar", color: info, values: paid.map((s) => s.cost_usd) },
    ], { yFmt: (v) => `$${v.toFixed(2)}`, horizontal: true });
    $("#m-updated").textContent = `updated ${fmtTime(series.generated_at)}`;
  } catch (err) {
    $("#m-updated").textContent = `metrics: ${err.message}`;
  }
}

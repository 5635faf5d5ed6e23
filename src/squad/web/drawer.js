// The card detail drawer (#/cards/ID): fields, actions, live and archived log, runs, prompt sent, review diff.

import { CANCELLABLE, RETRYABLE, RUNNING, state } from "./state.js";
import { $, esc, fmtCost, fmtDur, fmtTime, toast } from "./util.js";
import { api } from "./http.js";
import { dueText, elapsedOf, maxAttempts } from "./cardtimes.js";
import { act } from "./actions.js";

// What the audit log's actions read as in a card's detail: "approved by alice".
const PAST = { add: "added", approve: "approved", reject: "rejected", cancel: "cancelled", retry: "retried",
  land: "landed", answer: "answered", "intake add": "added from GitHub", "intake edit": "edited on GitHub",
  "intake cancel": "cancelled on GitHub", "intake retry": "retried from GitHub" };
const MAX_LOG_NODES = 1500;        // lines kept in the log view (older ones are dropped from the top)

// A run's tokens: input (every prompt token the model read, cached ones included) / output, and of
// the input, what came from the prompt cache and what was written to it.
const fmtInt = (n) => (n == null ? "–" : esc(Number(n).toLocaleString("en-US")));
function tokensCell(r) {
  if (r.input_tokens == null && r.output_tokens == null) return "–";
  const cache = r.cache_read_tokens || r.cache_creation_tokens
    ? `<div class="muted">cache: ${fmtInt(r.cache_read_tokens ?? 0)} read, ${fmtInt(r.cache_creation_tokens ?? 0)} written</div>`
    : "";
  return `${fmtInt(r.input_tokens)} / ${fmtInt(r.output_tokens)}${cache}`;
}

export const detail = {
  id: null, card: null, runs: [], lastLogId: null, follow: true, fetching: false, again: false,
  lastTask: undefined, archived: null, gen: 0,
  async open(id) {
    $("#d-audit").textContent = "";
    this.id = id; state.detailId = id; this.gen += 1; this.ready = false; this.full = null;
    const gen = this.gen;
    this.lastLogId = null; this.lastTask = undefined; this.follow = true; this.archived = null;
    const box = $("#detail");
    box.hidden = false;
    $("#d-log").textContent = "";
    // Never show the previous card's runs while this one's are on their way
    this.runs = [];
    $("#d-runs tbody").innerHTML = "";
    $("#d-verify").hidden = true;
    $("#d-prompt").textContent = "";
    $("#d-prompt-box").open = false;
    $("#d-follow").hidden = true;
    const local = state.cards.get(id);
    if (local) this.update(local);
    else { $("#d-id").textContent = id; $("#d-title").textContent = ""; }
    $("#d-close").focus();
    try {
      const full = await api(`/api/cards/${encodeURIComponent(id)}`);
      if (gen !== this.gen) return;
      this.runs = full.runs || [];
      this.ready = true;
      this.drawRuns();
      this.full = full;
      this.update(state.cards.get(id) || full);
      $("#d-desc").textContent = full.description || "(none)";
      $("#d-audit").textContent = (full.actions || []).map((a) => `${PAST[a.action] || a.action} by ${a.who} · ${fmtTime(a.at)}`).join(" · ");
      this.poke();
      if (this.card && this.card.status === "REVIEW") this.loadDiff();
    } catch (err) {
      if (gen !== this.gen) return;
      $("#d-title").textContent = err.status === 404 ? "Unknown card" : `Could not read the card: ${err.message}`;
    }
  },
  close() {
    this.id = null; state.detailId = null; this.gen += 1;
    $("#detail").hidden = true;
    const el = state.els.get(this.lastOpened || "");
    if (el) el.focus();
  },
  update(c) {
    this.card = c;
    // The board's compact card lacks some fields the drawer shows: they come from the full card.
    const more = this.full && this.full.card_id === c.card_id ? this.full : {};
    this.lastOpened = c.card_id;
    $("#d-id").textContent = c.card_id;
    const badge = $("#d-status");
    badge.textContent = c.status;
    badge.style.setProperty("--c", getComputedStyle(document.documentElement).getPropertyValue(statusColor(c.status)));
    $("#d-title").textContent = c.title || "";
    const acts = [];
    if (RETRYABLE.has(c.status)) acts.push(`<button type="button" data-action="retry">Retry</button>`);
    if (c.attempts > 0) acts.push(`<button type="button" data-action="retry-force" title="End a running attempt and start a new one">Retry (force)</button>`);
    if (CANCELLABLE.has(c.status)) acts.push(`<button type="button" data-action="cancel" class="danger">Cancel</button>`);
    if (c.status === "REVIEW") {
      acts.push(`<button type="button" data-action="approve" class="primary">Approve</button>`);
      acts.push(`<button type="button" data-action="reject" class="danger">Reject…</button>`);
    }
    const html = acts.join("");
    if ($("#d-actions").dataset.html !== html) { $("#d-actions").innerHTML = html; $("#d-actions").dataset.html = html; }
    // Every value is text (escaped here) unless built by this module as markup from escaped parts.
    const markup = (html) => ({ html });
    const f = [
      ["Squad", c.squad || "–"], ["Agent", c.agent || "(default)"], ["Priority", c.priority],
      ["Attempt", c.attempts ? `${c.attempts} / ${maxAttempts(c)}` : "not run yet"],
      ["Progress", `${c.progress}%${c.current_step ? " · " + c.current_step : ""}`],
      ["Worker", c._worker || c.worker || "–"],
      ["Elapsed", markup(`<span id="d-elapsed">${esc(fmtDur(elapsedOf(c)))}</span>${c.time_limit_s ? " / " + esc(fmtDur(c.time_limit_s)) : ""}`)],
      ["Cost", fmtCost(c.cost_usd)],
      ["Depends on", markup((more.depends_on || []).map((d) => `<a href="#/cards/${esc(encodeURIComponent(d))}">${esc(d)}</a>`).join(", ") || "–")],
      ["Labels", (more.labels || []).join(", ") || "–"],
      ["Task", more.celery_task_id || "–"], ["Next attempt", c.status === "RETRYING" ? dueText(c) : "–"],
      ["Last error", c.last_error ? markup(`<span class="bad">${esc(c.last_error)}</span>`) : "–"], ["Updated", fmtTime(c.updated_at)],
    ];
    $("#d-fields").innerHTML = f.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v && v.html !== undefined ? v.html : esc(v)}</dd>`).join("");
    $("#d-diff-section").hidden = c.status !== "REVIEW";
    this.poke();
  },
  tick() {
    const el = $("#d-elapsed");
    if (el && this.card) el.textContent = fmtDur(elapsedOf(this.card));
    if (this.card && RUNNING.has(this.card.status)) this.poke();
  },
  // New log lines may exist: fetch what follows the last one seen (one request at a time).
  poke() {
    if (!this.id || this.archived || !this.ready) return; // runs first: they name the attempts
    if (this.fetching) { this.again = true; return; }
    this.loadLog();
  },
  async loadLog() {
    if (!this.id || this.fetching) return;
    const id = this.id, gen = this.gen;
    this.fetching = true;
    try {
      do {
        this.again = false;
        const q = this.lastLogId ? `after=${encodeURIComponent(this.lastLogId)}&limit=1000` : "limit=500";
        const lines = await api(`/api/tasks/${encodeURIComponent(id)}/logs?${q}`);
        if (gen !== this.gen) return;
        if (lines.length) { this.appendLines(lines); this.lastLogId = lines[lines.length - 1].id; }
        $("#d-logsrc").textContent = this.lastLogId && this.lastLogId.startsWith("0-") ? "archived log of the last run" : "live";
        if (lines.length >= 1000) this.again = true;
      } while (this.again);
    } catch (err) {
      /* the next event or tick retries */
    } finally {
      this.fetching = false;
    }
  },
  runFor(taskId) { return this.runs.find((r) => r.task_id === taskId); },
  appendLines(lines) {
    const log = $("#d-log");
    const frag = document.createDocumentFragment();
    for (const l of lines) {
      if (l.task_id !== this.lastTask) {
        this.lastTask = l.task_id;
        const run = this.runFor(l.task_id);
        const h = document.createElement("div");
        h.className = "att";
        h.textContent = run
          ? `── attempt ${run.attempt} · ${run.worker || "?"} · started ${fmtTime(run.started_at)} ──`
          : `── attempt · task ${l.task_id || "?"} ──`;
        if (!run && l.task_id) this.refreshRuns();
        frag.append(h);
      }
      const d = document.createElement("div");
      d.className = l.level === "ERROR" || l.level === "STDERR" ? "ln stderr" : "ln";
      const ts = document.createElement("span");
      ts.className = "ts";
      ts.textContent = (l.timestamp || "").slice(11, 19);
      d.append(ts, document.createTextNode(l.message));
      frag.append(d);
    }
    log.append(frag);
    let extra = log.childElementCount - MAX_LOG_NODES;
    if (extra > 0) {
      while (extra-- > 0) log.firstElementChild.remove();
      if (!log.firstElementChild.classList.contains("note")) {
        const n = document.createElement("div");
        n.className = "note";
        n.textContent = `older lines not shown (the view keeps the last ${MAX_LOG_NODES}); use the runs' logs below`;
        log.prepend(n);
      }
    }
    if (this.follow) log.scrollTop = log.scrollHeight;
  },
  async refreshRuns() {
    if (this.runsPending) return;
    this.runsPending = true;
    const gen = this.gen;
    try {
      const runs = await api(`/api/cards/${encodeURIComponent(this.id)}/runs`);
      if (gen !== this.gen) return;  // another card was opened meanwhile
      this.runs = runs;
      this.drawRuns();
    } catch (e) { /* keep the old list */ } finally { this.runsPending = false; }
  },
  drawRuns() {
    $("#d-runs tbody").innerHTML = this.runs.map((r) => {
      const dur = r.started_at ? ((r.ended_at ? Date.parse(r.ended_at) : Date.now()) - Date.parse(r.started_at)) / 1000 : null;
      const cls = r.status === "succeeded" ? "ok" : (r.status === "failed" || r.status === "lost" ? "bad" : "");
      return `<tr><td>${esc(r.attempt)}</td><td>${esc(r.worker || "–")}</td><td>${fmtTime(r.started_at)}</td>` +
        `<td class="num">${fmtDur(dur)}</td><td class="num">${esc(r.exit_code ?? "–")}</td><td class="${cls}">${esc(r.status)}</td>` +
        `<td class="err" title="${esc(r.error || "")}">${esc(r.error || "")}</td><td class="num">${r.cost_usd != null ? fmtCost(r.cost_usd) : "–"}</td>` +
        `<td class="num d-tokens">${tokensCell(r)}</td><td class="mono">${esc(r.session_id || "–")}</td>` +
        `<td class="${r.verify_exit == null ? "" : r.verify_exit === 0 ? "ok" : "bad"}">${r.verify_exit == null ? "–" : r.verify_exit === 0 ? "passed" : `failed (${esc(r.verify_exit)})`}</td>` +
        `<td class="mono">${r.landed_commit ? esc(r.landed_commit.slice(0, 12)) : "–"}</td>` +
        `<td>${r.log_available ? `<button type="button" data-run="${esc(r.id)}" data-attempt="${esc(r.attempt)}">view</button>` : "–"}</td></tr>`;
    }).join("") || `<tr><td colspan="13" class="muted">no runs yet</td></tr>`;
    // The latest verify output (the conflict or verify failure the card's next attempt gets)
    const verified = [...this.runs].reverse().find((r) => r.verify_output);
    const box = $("#d-verify");
    box.hidden = !verified;
    $("#d-verify-out").textContent = verified
      ? `attempt ${verified.attempt}: verify ${verified.verify_exit === 0 ? "passed" : `failed (exit ${verified.verify_exit})`}\n${verified.verify_output}` : "";
  },
  async showRunLog(runId, attempt) {
    try {
      const res = await api(`/api/runs/${runId}/log`);
      this.archived = runId;
      const log = $("#d-log");
      log.textContent = "";
      const h = document.createElement("div");
      h.className = "att";
      h.textContent = `── archived log of attempt ${attempt} ──`;
      log.append(h);
      const lines = res.log.split("\n").slice(-MAX_LOG_NODES);
      const frag = document.createDocumentFragment();
      for (const line of lines) {
        const d = document.createElement("div");
        d.className = / ERROR /.test(line.slice(0, 40)) ? "ln stderr" : "ln";
        d.textContent = line;
        frag.append(d);
      }
      log.append(frag);
      $("#d-logsrc").innerHTML = `archived log of attempt ${esc(attempt)} · <a href="#" id="d-back-live">back to the live log</a>`;
      log.scrollTop = 0;
    } catch (err) { toast(`log: ${err.message}`, true); }
  },
  backToLive() {
    this.archived = null; this.lastLogId = null; this.lastTask = undefined; this.follow = true;
    $("#d-log").textContent = "";
    this.loadLog();
  },
  async loadPrompt() {
    const att = this.card?.attempts || 0;
    $("#d-prompt-att").textContent = att ? `(attempt ${att})` : "";
    if (!att) { $("#d-prompt").textContent = "The card has not run yet: no prompt was sent."; return; }
    try {
      const res = await api(`/api/cards/${encodeURIComponent(this.id)}/prompt?attempt=${att}`);
      $("#d-prompt").textContent = res.prompt;
    } catch (err) {
      $("#d-prompt").textContent = err.status === 404 ? `Not available here: ${err.message}` : err.message;
    }
  },
  async loadDiff() {
    const box = $("#d-diff");
    box.textContent = "loading…";
    try {
      const d = await api(`/api/cards/${encodeURIComponent(this.id)}/diff`);
      const files = d.files || [];
      $("#d-diffstat").textContent = `${d.branch || ""} · ${files.length} file(s) · ` +
        `+${files.reduce((a, f) => a + (f.insertions || 0), 0)} −${files.reduce((a, f) => a + (f.deletions || 0), 0)}`;
      const frag = document.createDocumentFragment();
      const lines = (d.patch || "").split("\n");
      for (const line of lines.slice(0, 5000)) {
        const el = document.createElement("div");
        el.className = line.startsWith("diff --git") ? "file" : line.startsWith("@@") ? "hunk"
          : line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : "";
        el.textContent = line || " ";
        frag.append(el);
      }
      box.textContent = "";
      box.append(frag);
      if (lines.length > 5000) box.append(Object.assign(document.createElement("div"), { textContent: `… ${lines.length - 5000} more lines` }));
    } catch (err) {
      box.textContent = `No diff: ${err.message}`;
    }
  },
};
function statusColor(s) {
  return { DONE: "--ok", FAILED: "--bad", RETRYING: "--warn", IN_PROGRESS: "--accent", QUEUED: "--info" }[s] || "--neutral";
}
export function setupDetail() {
  $("#d-close").addEventListener("click", closeDetail);
  $("#d-actions").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (b && detail.id) act(detail.id, b.dataset.action, b);
  });
  const log = $("#d-log");
  log.addEventListener("scroll", () => {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    detail.follow = atEnd;
    $("#d-follow").hidden = atEnd || Boolean(detail.archived);
  }, { passive: true });
  $("#d-follow").addEventListener("click", () => { detail.follow = true; log.scrollTop = log.scrollHeight; $("#d-follow").hidden = true; });
  $("#d-runs").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-run]");
    if (b) detail.showRunLog(b.dataset.run, b.dataset.attempt);
  });
  $("#d-logsrc").addEventListener("click", (ev) => {
    if (ev.target.id === "d-back-live") { ev.preventDefault(); detail.backToLive(); }
  });
  $("#d-prompt-box").addEventListener("toggle", () => { if ($("#d-prompt-box").open) detail.loadPrompt(); });
}

// Close the drawer: back to the view it was opened from when it has its own URL (#/cards/<id>).
export function closeDetail() {
  if (location.hash.startsWith("#/cards/")) location.hash = state.lastView;
  else detail.close();
}

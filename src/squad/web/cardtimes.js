// What a card says about time and attempts (attempt n of max, time running, next attempt due): shared by the board and the drawer.

import { RUNNING, state } from "./state.js";
import { fmtDur, nowS, tsOf } from "./util.js";

export function maxAttempts(c) {
  const mr = c.max_retries ?? state.defaultMaxRetries;
  return mr == null ? "?" : mr + 1;
}

export function elapsedOf(c) {
  if (!RUNNING.has(c.status)) return c.elapsed ?? null;
  if (c._elapsed == null) return null;
  return c._elapsed + (performance.now() - c._elapsedAt) / 1000;
}

export function dueText(c) {
  if (c.status !== "RETRYING") return "";
  const at = tsOf(c.next_attempt_at);
  if (at == null) return "next attempt: when due";
  const left = at - nowS();
  return left > 0 ? `next attempt in ${fmtDur(left)}` : "next attempt due now";
}

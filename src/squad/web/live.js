// The /ws/tasks socket: ping, reconnect with backoff and ?since=<last event id> so no event is missed; the Live indicator.

import { state } from "./state.js";
import { $, toast } from "./util.js";
import { checkToken } from "./http.js";
import { loadBoard, onEvent, reloadBoard } from "./sync.js";

const PING_EVERY_MS = 20000;
const OFFLINE_AFTER_FAILURES = 4;  // reconnect attempts before the indicator says Offline

export const feed = {
  ws: null, failures: 0, timer: null, pingTimer: null, opened: false, everConnected: false, started: false,
  // The URL never carries the token (proxies and access logs keep URLs): it travels as a subprotocol.
  url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams();
    if (state.lastId) q.set("since", state.lastId);
    const qs = q.toString();
    return `${proto}//${location.host}/ws/tasks${qs ? "?" + qs : ""}`;
  },
  protocols() {
    return state.token ? ["squad", tokenProtocol(state.token)] : ["squad"];
  },
  connect() {
    clearTimeout(this.timer);
    this.opened = false;
    let ws;
    try { ws = new WebSocket(this.url(), this.protocols()); } catch (e) { this.retry(); return; }
    this.ws = ws;
    ws.onopen = () => { this.opened = true; };
    ws.onmessage = (m) => this.message(m.data);
    ws.onclose = (ev) => { if (this.ws === ws) this.closed(ev); };
    ws.onerror = () => { /* onclose follows */ };
  },
  message(data) {
    if (data === "pong") { this.lastPong = Date.now(); return; }
    let ev;
    try { ev = JSON.parse(data); } catch (e) { return; }
    if (ev.type === "connected") {
      const resumed = this.everConnected;
      this.failures = 0;
      this.everConnected = true;
      setConn("live");
      this.startPing();
      if (!state.loaded && !this.loading) {
        this.loading = true;
        loadBoard().catch((err) => { toast(`Could not read the board: ${err.message}`, true); this.loading = false; });
      } else if (resumed && !state.lastId && state.loaded) {
        reloadBoard(); // no event id to resume from: read the board again
      }
      return;
    }
    onEvent(ev);
  },
  startPing() {
    clearInterval(this.pingTimer);
    this.lastPong = Date.now();
    this.pingTimer = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastPong > PING_EVERY_MS * 2.5) { this.ws.close(); return; }
      this.ws.send("ping");
    }, PING_EVERY_MS);
  },
  async closed(ev) {
    clearInterval(this.pingTimer);
    this.ws = null;
    const neverOpened = !this.opened;
    this.failures += 1;
    if (neverOpened && this.failures >= 2 && await checkToken()) return; // askToken restarts us
    setConn(this.failures >= OFFLINE_AFTER_FAILURES || !navigator.onLine ? "offline" : "reconnecting");
    if (!state.loaded && !this.loading && this.failures === 1) {
      // Show the board even without a live feed.
      this.loading = true;
      loadBoard().catch((err) => { toast(`Could not read the board: ${err.message}`, true); this.loading = false; });
    }
    this.retry(ev && ev.code === 4008 ? 0 : undefined);
  },
  retry(delay) {
    const d = delay ?? Math.min(10000, 500 * 2 ** Math.min(this.failures, 5));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), d);
  },
  // The page starts the feed once it has read the statuses and built its lanes (main.js): a board
  // read before has no lanes to go into, and a connect() before that one would open a second socket.
  start() {
    this.started = true;
    this.connect();
  },
  // A new token or the network back: connect again at once, if the feed has started.
  restart() {
    if (!this.started) return;
    if (this.ws) { const ws = this.ws; this.ws = null; ws.close(); }
    this.failures = 0;
    this.connect();
  },
};

// `squad.token.<token>` when every character may stand in a subprotocol name (RFC 6455: an HTTP
// token), else `squad.token64.<base64url of its UTF-8>`.
const TCHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
function tokenProtocol(token) {
  if (TCHARS.test(token)) return `squad.token.${token}`;
  const bytes = new TextEncoder().encode(token);
  const b64 = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `squad.token64.${b64}`;
}

export function setConn(s) {
  const el = $("#conn");
  el.dataset.state = s;
  el.textContent = { live: "Live", reconnecting: "Reconnecting…", offline: "Offline", connecting: "Connecting…" }[s];
  el.title = s === "live" ? "Receiving live events" : "The live feed is down; the page keeps trying and will catch up";
}

// Shared by the three pages: configuration, REST calls, the resumable websocket,
// formatting. Plain ES module, no build step.

/** The configuration the server embedded in the page (api/web.py). */
export const config = (() => {
  const el = document.getElementById("o2o-config");
  try {
    return el ? JSON.parse(el.textContent) : {};
  } catch {
    return {};
  }
})();

export const params = new URLSearchParams(location.search);
export const token = params.get("token") || "";

/** The subject (``sub``) of a JWT, read without checking it (the server checks). */
export function tokenSubject(tok) {
  try {
    const part = tok.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4))).sub || null;
  } catch {
    return null;
  }
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.reason = this.body.reason || null;
  }
}

// -- the service clock --------------------------------------------------------------------

const RATE_MIN_SPAN_MS = 5000; // readings closer than this say nothing about the rate
const RATE_WINDOW_MS = 180000; // the rate comes from readings at most this old
const RATE_MIN = 0.1;
const RATE_MAX = 3600;

/**
 * An estimate of the service's clock (epoch seconds), which may differ from the
 * browser's: the phone's clock may be off, and under ``o2o demo`` the service clock runs
 * ``--speed`` times faster. Readings come from snapshot frames (``now``) and from the
 * ``X-O2O-Clock`` response header (the demo sends it); heartbeat frames carry wall time
 * and are not readings. now() = the last reading + local time since x rate. The rate is 1
 * until two readings at least 5 s apart show otherwise: measured from the oldest reading
 * of the last 3 minutes, clamped to [0.1, 3600]. When the newest 5 s disagree with that by
 * more than half (the service restarted with another clock), older readings are dropped;
 * a clock that goes back (by more than 5 s) starts over at rate 1.
 */
export class ServiceClock {
  constructor() {
    this.readings = []; // [{server: s, local: ms}], oldest first
    this.rate = 1;
    this.count = 0;
  }

  /** A reading: the service clock said ``serverNow`` at local time ``localMs``. */
  observe(serverNow, localMs = Date.now()) {
    const server = Number(serverNow);
    if (!Number.isFinite(server) || server <= 0 || !Number.isFinite(localMs)) return;
    this.count += 1;
    const prev = this.readings[this.readings.length - 1];
    if (prev && (localMs < prev.local || server < prev.server - 5)) {
      this.readings = []; // a clock went back
      this.rate = 1;
    } else if (prev && server <= prev.server) {
      return; // answers that crossed on the way (the newer one is already in)
    }
    const r = this.readings;
    r.push({ server, local: localMs });
    while (r.length > 2 && localMs - r[1].local > RATE_WINDOW_MS) r.shift();
    if (r.length > 200) r.splice(1, 1);
    const rateFrom = (a) => (server - a.server) / ((localMs - a.local) / 1000);
    const aged = r.filter((x) => localMs - x.local >= RATE_MIN_SPAN_MS);
    if (!aged.length) return;
    let rate = rateFrom(aged[0]);
    const recent = aged[aged.length - 1];
    if (recent !== aged[0]) {
      const fresh = rateFrom(recent);
      if (Math.abs(fresh / rate - 1) > 0.5) {
        r.splice(0, r.indexOf(recent)); // the clock changed: measure from after the change
        rate = fresh;
      }
    }
    this.rate = Math.min(RATE_MAX, Math.max(RATE_MIN, rate));
  }

  /** The service clock now (epoch seconds); the browser's clock before any reading. */
  now(localMs = Date.now()) {
    const last = this.readings[this.readings.length - 1];
    if (!last) return localMs / 1000;
    return last.server + ((localMs - last.local) / 1000) * this.rate;
  }
}

/** The page's estimate of the service clock (window.o2oClock in the page, for tests). */
export const serviceClock = new ServiceClock();
window.o2oClock = serviceClock;

/** The service clock now, epoch seconds: use it for "in X min", lateness and ages. */
export function serviceNow() {
  return serviceClock.now();
}

function readClockHeader(res) {
  const v = res.headers.get("X-O2O-Clock");
  if (v) serviceClock.observe(parseFloat(v));
  return Boolean(v);
}

/**
 * Keep reading the service clock when the service sends it (``o2o demo``): GET /healthz
 * now, after 6 s (a first rate), then every 30 s. A service without the header (a
 * real-time one) is asked once; snapshots still give the offset.
 */
export function startClockSync({ firstMs = 6000, everyMs = 30000 } = {}) {
  let n = 0;
  const tick = async () => {
    let sent = false;
    try {
      const res = await fetch("/healthz", { cache: "no-store" });
      sent = readClockHeader(res);
    } catch {
      sent = true; // offline: try again later
    }
    n += 1;
    if (sent) setTimeout(tick, n === 1 ? firstMs : everyMs);
  };
  tick();
}

/**
 * Call ``fn`` about every ``serviceS`` seconds of the service clock (so relative times
 * stay current under a fast demo clock), but not more often than every ``minMs``.
 */
export function everyServiceSeconds(fn, serviceS, minMs = 1000, maxMs = 30000) {
  const next = () => {
    const ms = Math.min(maxMs, Math.max(minMs, (serviceS * 1000) / serviceClock.rate));
    setTimeout(() => {
      fn();
      next();
    }, ms);
  };
  next();
}

/** "in 7 min" / "3 min ago" / "now", from the service clock. */
export function relative(t, now = serviceNow()) {
  if (t == null) return "";
  const s = t - now;
  if (Math.abs(s) < 30) return "now";
  return s > 0 ? `in ${duration(s)}` : `${duration(-s)} ago`;
}

// -- REST -------------------------------------------------------------------------------

/** fetch() with the bearer token; JSON in and out; problem documents become ApiError. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${token}`, ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  readClockHeader(res);
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json().catch(() => null) : await res.text();
  if (!res.ok) throw new ApiError(res.status, typeof data === "object" ? data : { detail: data });
  return data;
}

/** Event ids are "<ms>-<seq>"; true when ``a`` comes after ``b``. */
export function idAfter(a, b) {
  if (!b) return true;
  if (!a) return false;
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am > bm || (am === bm && as > bs);
}

const CLOSE_TEXT = {
  4400: "The request was not understood.",
  4401: "This link is not valid (the token is missing, wrong or expired).",
  4403: "You do not have access to this.",
  4404: "Not found.",
};

/**
 * A websocket that resumes: it remembers the highest event id received and reconnects
 * with ``?last_event_id=`` after a drop (4408 fell behind, 1012 restart, network loss),
 * with exponential backoff and jitter. 4401/4403/4404 are final: no reconnect.
 * Going offline closes the socket at once and reconnects when the browser is online.
 */
export class LiveSocket {
  constructor(path, { onFrame, onState, params: extra = {}, watchdogMs = 45000 }) {
    this.path = path;
    this.onFrame = onFrame;
    this.onState = onState || (() => {});
    this.extra = extra;
    this.watchdogMs = watchdogMs;
    this.lastId = null;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.watchdog = null;
    this.stopped = false;
    this.connects = [];
    this.errorFrame = null;
    window.addEventListener("offline", () => this._offline());
    window.addEventListener("online", () => this._online());
  }

  url() {
    const u = new URL(this.path, location.href);
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    u.searchParams.set("token", token);
    for (const [k, v] of Object.entries(this.extra)) if (v != null) u.searchParams.set(k, v);
    if (this.lastId) u.searchParams.set("last_event_id", this.lastId);
    return u.toString();
  }

  start() {
    this.stopped = false;
    if (!navigator.onLine) {
      this.onState({ state: "offline" });
      return;
    }
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  _connect() {
    clearTimeout(this.timer);
    const url = this.url();
    this.connects.push({ at: Date.now(), resumed_from: this.lastId });
    this.onState({ state: this.attempt ? "reconnecting" : "connecting" });
    const ws = new WebSocket(url);
    this.ws = ws;
    this.errorFrame = null;
    let got = false;
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      this._arm();
      if (frame.type === "error" && frame.code) {
        this.errorFrame = frame;
        return;
      }
      if (!got) {
        got = true;
        this.attempt = 0;
        this.onState({ state: "live" });
      }
      if (frame.type === "snapshot" && frame.id) this.lastId = frame.id;
      else if (frame.id && idAfter(frame.id, this.lastId)) this.lastId = frame.id;
      this.onFrame(frame);
    };
    ws.onopen = () => this._arm();
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      clearTimeout(this.watchdog);
      this.ws = null;
      if (this.stopped) return;
      const code = ev.code;
      if (code === 4401 || code === 4403 || code === 4404) {
        this.stopped = true; // final: no reconnect, not even when the network returns
        const reason = (this.errorFrame && this.errorFrame.reason) || ev.reason || "";
        this.onState({ state: "error", code, reason, message: CLOSE_TEXT[code] });
        return;
      }
      if (code === 4400 && this.lastId) this.lastId = null; // bad resume point: start afresh
      if (!navigator.onLine) {
        this.onState({ state: "offline" });
        return;
      }
      this._retry(code);
    };
  }

  _retry(code) {
    const base = Math.min(15000, 500 * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this.onState({ state: "reconnecting", code, retryInMs: delay });
    this.timer = setTimeout(() => this._connect(), delay);
  }

  _arm() {
    clearTimeout(this.watchdog);
    // The server sends a heartbeat when idle; silence this long means a dead link.
    this.watchdog = setTimeout(() => {
      if (this.ws) this.ws.close(4000, "silent");
    }, this.watchdogMs);
  }

  _offline() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "offline");
    }
    this.onState({ state: "offline" });
  }

  _online() {
    if (this.stopped || this.ws) return;
    this.attempt = 0;
    this._connect();
  }
}

/** Show a connection state in a ``.conn`` element. */
export function showConnection(el, s) {
  el.dataset.state = s.state;
  const text = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: s.retryInMs ? `Reconnecting in ${Math.ceil(s.retryInMs / 1000)} s…` : "Reconnecting…",
    offline: "Offline — waiting for the network",
    error: "Disconnected",
    idle: "Not connected",
  }[s.state];
  el.textContent = text || s.state;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/** Epoch seconds -> "14:05". */
export function clock(t) {
  return t == null ? "—" : timeFmt.format(new Date(t * 1000));
}

/** Seconds -> "7 min" / "1 h 05 min". */
export function duration(s) {
  const m = Math.max(0, Math.round(s / 60));
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

/** Say something to screen readers and show it in ``node`` (a live region). */
export function announce(node, text, kind = "") {
  node.hidden = !text;
  node.className = `banner ${kind}`.trim();
  node.textContent = text;
}

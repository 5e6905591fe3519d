// Courier view: /courier?token=...&courier=<id> (the id defaults to the token's subject).
// Shift, the live route (WS /v1/couriers/{id}/route, acknowledged with {"type":"ack"}),
// pickup/drop-off confirmations (with an override reason outside the geofence) and the
// phone's GPS posted as observations. ``&geo=off`` starts with location sharing off
// (``o2o demo``: its driver posts this courier's fixes); the toggle turns it on and off.
// While the page is not sharing it follows the service's position of the courier.
import {
  ApiError,
  LiveSocket,
  announce,
  api,
  clock,
  el,
  params,
  serviceClock,
  serviceNow,
  showConnection,
  startClockSync,
  token,
  tokenSubject,
} from "./common.js";
import { createMap, pinIcon } from "./map.js";

const $ = (id) => document.getElementById(id);
const courierId = params.get("courier") || tokenSubject(token) || "";
const base = `/v1/couriers/${encodeURIComponent(courierId)}`;
const FLUSH_MS = 2000;
const FOLLOW_MS = 3000; // how often to read the service's position while not sharing
const geoOff = params.get("geo") === "off";

const state = {
  courier: null, // null: unknown to the service (never started a shift)
  position: null, // [lat, lon]
  stops: [],
  routeId: null,
  pendingAck: null,
  acked: null,
  sharing: false,
  geoOff,
  watchId: null,
  buffer: [],
  posted: 0,
  lastFlush: 0,
  flushTimer: 0,
  busy: false,
};
let socket = null;
let view = null;

function positionOf(c) {
  if (!c) return null;
  if (c.position && Array.isArray(c.position.point)) return c.position.point;
  if (c.position && c.position.lat != null) return [c.position.lat, c.position.lon];
  if (c.lat != null) return [c.lat, c.lon];
  return null;
}

// -- shift ------------------------------------------------------------------------------

async function load() {
  try {
    setCourier(await api(base));
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) setCourier(null);
    else {
      // refused (bad token, someone else's page) or unreachable: say so, not "Connecting…"
      showConnection($("conn"), { state: "error" });
      return fail(e);
    }
  }
  if (state.courier) connect();
  else showConnection($("conn"), { state: "idle" }); // no shift yet: nothing to follow
}

function setCourier(c) {
  state.courier = c;
  const p = positionOf(c);
  if (p && !state.position) state.position = p;
  renderShift();
  renderMap();
  if (!followTimer) follow();
}

function renderShift() {
  const c = state.courier;
  const on = Boolean(c && c.on_shift);
  document.body.dataset.shift = on ? "on" : "off";
  $("who").textContent = `Courier ${courierId}`;
  $("shift-state").textContent = on
    ? `On shift until ${clock(c.shift_end)} · capacity ${c.capacity}`
    : "Off shift.";
  $("start-shift").disabled = on;
  $("end-shift").disabled = !on;
}

async function shift(action) {
  const body = { action };
  if (action === "start") {
    const lat = parseFloat($("start-lat").value);
    const lon = parseFloat($("start-lon").value);
    // Without a given place the service starts from the latest shared (fused) position.
    if (Number.isFinite(lat) && Number.isFinite(lon)) Object.assign(body, { lat, lon });
    if (state.buffer.length) await flush();
  }
  try {
    setCourier(await api(`${base}/shift`, { method: "POST", body }));
    announce($("notice"), action === "start" ? "Shift started." : "Shift ended.", "ok");
    if (!socket) connect();
  } catch (e) {
    if (e instanceof ApiError && e.reason === "no_position") {
      announce(
        $("notice"),
        "We need to know where you are to start: turn on “Share my location” or enter a start point.",
        "error",
      );
      $("start-where").open = true;
    } else fail(e);
  }
}

// -- live route -------------------------------------------------------------------------

function connect() {
  socket = new LiveSocket(`${base}/route`, { onFrame, onState });
  window.o2oCourier.socket = socket;
  socket.start();
}

function onState(s) {
  showConnection($("conn"), s);
  if (s.state === "error") {
    announce($("notice"), `${s.message}${s.reason ? ` (${s.reason})` : ""}`, "error");
    document.body.dataset.error = String(s.code);
    socket = null;
  }
}

function onFrame(f) {
  switch (f.type) {
    case "snapshot":
      serviceClock.observe(f.now);
      setCourier(f.courier);
      // The route's own id (the snapshot id stands in when its event is gone); no need to
      // acknowledge again what was acknowledged before a reload.
      if (f.acknowledged_route_id) {
        state.acked = f.acknowledged_route_id;
        document.body.dataset.acked = state.acked;
      }
      setRoute(f.route.stops, f.route_id || f.id, false);
      break;
    case "route":
      setRoute(f.stops, f.id, true);
      break;
    case "ack":
      if (f.route_id === state.pendingAck || f.route_id === state.routeId) {
        state.acked = f.route_id;
        state.pendingAck = null;
        $("ack-row").hidden = true;
        announce($("route-banner"), "Route acknowledged.", "ok");
        document.body.dataset.acked = f.route_id;
      }
      break;
    case "order": {
      const o = f.order;
      if (f.event === "order_cancelled") {
        announce($("route-banner"), `Order ${o.id} was cancelled.`, "error");
      } else if (f.event === "order_unassigned" || (o.courier_id && o.courier_id !== courierId)) {
        announce($("route-banner"), `Order ${o.id} was taken off your route.`);
      }
      break;
    }
    case "courier":
      setCourier(f.courier);
      break;
    case "error":
      announce($("notice"), f.detail || f.reason, "error");
      break;
    default:
      break;
  }
}

function setRoute(stops, id, changed) {
  state.stops = stops || [];
  state.routeId = id;
  const asked = !$("ack-row").hidden;
  const ask = state.stops.length > 0 && state.acked !== id;
  state.pendingAck = ask ? id : null;
  $("ack-row").hidden = !ask;
  if (ask) {
    const n = state.stops.length;
    announce(
      $("route-banner"),
      changed ? `New route: ${n} stop${n > 1 ? "s" : ""}. Please acknowledge.` : "Please acknowledge your route.",
    );
  } else if (asked) {
    announce($("route-banner"), ""); // acknowledged meanwhile (another device, before a reload)
  }
  renderStops();
  renderMap(true);
}

function acknowledge() {
  if (!state.pendingAck || !socket) return;
  if (socket.send({ type: "ack", id: state.pendingAck, route_id: state.pendingAck })) {
    announce($("route-banner"), "Acknowledging…");
  }
}

function renderStops() {
  const list = $("stops");
  list.replaceChildren(
    ...state.stops.map((s, i) => {
      const what = s.kind === "pickup" ? "Pickup" : "Drop-off";
      const action = s.kind === "pickup" ? "Picked up" : "Delivered";
      const place = s.place.id || `${s.place.lat.toFixed(5)}, ${s.place.lon.toFixed(5)}`;
      return el(
        "li",
        { dataset: { order: s.order_id, kind: s.kind } },
        el("span", { class: "n", "aria-hidden": "true", text: String(i + 1) }),
        el(
          "div",
          {},
          el("div", { class: "what", text: `${clock(s.eta)} · ${what}` }),
          el("div", { class: "muted", text: `Order ${s.order_id} · ${place}` }),
        ),
        el("button", {
          type: "button",
          class: "small",
          text: action,
          "aria-label": `Confirm ${what.toLowerCase()} of order ${s.order_id}`,
          onclick: (ev) => confirmStop(s, ev.currentTarget),
        }),
      );
    }),
  );
  $("no-stops").hidden = state.stops.length > 0;
}

// -- confirmations ----------------------------------------------------------------------

function askOverride(detail) {
  const dialog = $("override");
  $("override-why").textContent = detail;
  $("override-reason").value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" ? $("override-reason").value.trim() : null),
      { once: true },
    );
    dialog.showModal();
  });
}

async function confirmStop(stop, button) {
  const path = `/v1/orders/${encodeURIComponent(stop.order_id)}/${stop.kind}`;
  const what = stop.kind === "pickup" ? "Pickup" : "Drop-off";
  button.disabled = true;
  try {
    if (state.buffer.length) await flush();
    let reason = null;
    for (;;) {
      try {
        await api(path, { method: "POST", body: reason ? { override_reason: reason } : undefined });
        announce($("notice"), `${what} of order ${stop.order_id} confirmed.`, "ok");
        return;
      } catch (e) {
        const fence = ["outside_geofence", "no_recent_position"];
        if (!(e instanceof ApiError && e.status === 422 && fence.includes(e.reason)) || reason) {
          throw e;
        }
        reason = await askOverride(e.message);
        if (!reason) return;
      }
    }
  } catch (e) {
    fail(e);
  } finally {
    button.disabled = false;
  }
}

// -- location ---------------------------------------------------------------------------

function setSharing(on) {
  state.sharing = on;
  $("share-location").checked = on;
  if (on && !navigator.geolocation) {
    $("gps-state").textContent = "This browser cannot share its location.";
    state.sharing = false;
    $("share-location").checked = false;
    follow();
    return;
  }
  follow(); // while not sharing, the map follows the service's position instead
  if (on && state.watchId == null) {
    $("gps-state").textContent = "Waiting for a GPS fix…";
    state.watchId = navigator.geolocation.watchPosition(onFix, onFixError, {
      enableHighAccuracy: true,
      maximumAge: 5000,
      timeout: 30000,
    });
  } else if (!on && state.watchId != null) {
    navigator.geolocation.clearWatch(state.watchId);
    state.watchId = null;
    $("gps-state").textContent = "Location sharing is off.";
  }
}

/** While not sharing, keep the map's "Me" where the service has the courier (o2o demo's
 * driver posts the fixes; the courier websocket carries no positions). */
let followTimer = 0;
function follow() {
  clearTimeout(followTimer);
  followTimer = 0;
  if (state.sharing || !state.courier || !state.courier.on_shift) return;
  followTimer = setTimeout(async () => {
    followTimer = 0;
    if (state.sharing) return;
    try {
      const c = await api(base);
      const p = positionOf(c);
      if (p && !state.sharing) state.position = p;
      setCourier(c);
    } catch {
      follow(); // try again later
    }
  }, FOLLOW_MS);
}

function onFix(pos) {
  const c = pos.coords;
  const obs = {
    t: serviceClock.now(pos.timestamp), // the fix's time on the service's clock
    kind: "gps",
    lat: c.latitude,
    lon: c.longitude,
    accuracy: Math.max(1, c.accuracy || 50),
  };
  if (Number.isFinite(c.speed) && c.speed >= 0) obs.speed = c.speed;
  if (Number.isFinite(c.heading) && obs.speed > 0.5) obs.bearing = c.heading;
  state.buffer.push(obs);
  state.position = [c.latitude, c.longitude];
  renderMap();
  const wait = FLUSH_MS - (Date.now() - state.lastFlush);
  if (wait <= 0) flush();
  else if (!state.flushTimer) state.flushTimer = setTimeout(flush, wait);
}

function onFixError(err) {
  if (err.code === err.PERMISSION_DENIED) {
    $("gps-state").textContent = "Location permission was denied; sharing is off.";
    setSharing(false);
  } else {
    $("gps-state").textContent = `No GPS fix yet (${err.message || "timeout"}).`;
  }
}

async function flush() {
  clearTimeout(state.flushTimer);
  state.flushTimer = 0;
  if (state.busy || !state.buffer.length) return;
  const batch = state.buffer.splice(0, 1000);
  state.busy = true;
  state.lastFlush = Date.now();
  try {
    const out = await api(`${base}/observations`, { method: "POST", body: batch });
    state.posted += out.accepted;
    if (out.position) {
      state.position = [out.position.lat, out.position.lon];
      renderMap();
    }
    $("gps-state").textContent =
      `Location shared at ${clock(serviceNow())}` +
      (out.position ? ` (± ${Math.round(out.position.radius_m)} m).` : ".");
  } catch (e) {
    if (!(e instanceof ApiError)) state.buffer.unshift(...batch); // offline: keep them
    $("gps-state").textContent = `Could not send the location: ${e.message}`;
  } finally {
    state.busy = false;
  }
}

// -- map --------------------------------------------------------------------------------

function renderMap(fitToRoute = false) {
  if (!view) return;
  const { L, map } = view;
  if (!view.stops) view.stops = L.layerGroup().addTo(map);
  view.stops.clearLayers();
  const pts = state.stops.map((s) => [s.place.lat, s.place.lon]);
  state.stops.forEach((s, i) => {
    L.marker(pts[i], {
      icon: pinIcon(L, `stop ${s.kind}`, String(i + 1)),
      title: `${i + 1}. ${s.kind === "pickup" ? "Pickup" : "Drop-off"} ${s.order_id} at ${clock(s.eta)}`,
      alt: `Stop ${i + 1}`,
    }).addTo(view.stops);
  });
  const me = state.position;
  if (me) {
    if (!view.me) {
      view.me = L.marker(me, {
        icon: pinIcon(L, "courier", "Me", 30),
        title: "You",
        alt: "You",
        zIndexOffset: 1000,
      }).addTo(map);
    } else view.me.setLatLng(me);
  }
  const line = me ? [me, ...pts] : pts;
  if (line.length > 1) {
    if (!view.line) {
      view.line = L.polyline(line, { color: "#0a58a8", weight: 4, opacity: 0.8, interactive: false });
      view.line.addTo(map);
    } else view.line.setLatLngs(line);
  } else if (view.line) {
    view.line.remove();
    view.line = null;
  }
  if ((fitToRoute || !view.fitted) && line.length) {
    view.fitted = true;
    if (line.length === 1) map.setView(line[0], 15, { animate: false });
    else map.fitBounds(line, { padding: [40, 40], maxZoom: 16, animate: false });
  }
  map.getContainer().dataset.markers = String(pts.length + (me ? 1 : 0));
}

// -- page -------------------------------------------------------------------------------

function fail(e) {
  const detail = e instanceof ApiError ? `${e.message} (${e.status})` : String(e.message || e);
  announce($("notice"), detail, "error");
}

async function main() {
  window.o2oCourier = { state, socket: null };
  if (!token || !courierId) {
    announce($("notice"), "Open this page with ?token=…&courier=… from your dispatcher.", "error");
    showConnection($("conn"), { state: "error" });
    return;
  }
  $("start-shift").addEventListener("click", () => shift("start"));
  $("end-shift").addEventListener("click", () => shift("end"));
  $("ack").addEventListener("click", acknowledge);
  $("share-location").addEventListener("change", (e) => setSharing(e.target.checked));
  startClockSync();
  if (geoOff) {
    // o2o demo: its driver posts this courier's fixes; the phone's would fight them.
    document.body.dataset.geo = "off";
    $("gps-state").textContent = "Location sharing is off for this link (geo=off).";
  } else {
    try {
      const perm = await navigator.permissions.query({ name: "geolocation" });
      if (perm.state === "granted") setSharing(true);
    } catch {
      /* no Permissions API: the courier turns sharing on */
    }
  }
  renderShift();
  const mapReady = createMap($("map")).then((v) => {
    view = v;
    if (!view) return;
    view.map.on("dragstart", () => (view.userMoved = true));
    view.map.on("resize", () => !view.userMoved && renderMap(true));
    renderMap(true);
  });
  await load();
  await mapReady;
}

main();

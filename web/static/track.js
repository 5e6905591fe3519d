// Customer tracking page: /track/{order_id}?token=... (customer or share-link token).
// Follows WS /v1/orders/{id}/track; resumes with last_event_id after a drop.
import {
  LiveSocket,
  announce,
  clock,
  duration,
  everyServiceSeconds,
  relative,
  serviceClock,
  serviceNow,
  showConnection,
  startClockSync,
  token,
} from "./common.js";
import { Glide, createMap, pinIcon } from "./map.js";

const orderId = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop());
const $ = (id) => document.getElementById(id);
const RANK = { placed: 0, assigned: 1, picked_up: 2, delivered: 3 };
const HEADLINE = {
  placed: "Finding a courier",
  assigned: "Your courier is heading to the pickup",
  picked_up: "On the way to you",
  delivered: "Delivered",
  cancelled: "Cancelled",
};
const BIG_RADIUS_M = 40;
const COURIER_SVG =
  '<svg width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="#fff" stroke-width="2.2">' +
  '<circle cx="6" cy="17" r="3"/><circle cx="18" cy="17" r="3"/>' +
  '<path d="M6 17l4-8h5l3 8M10 9l-1-3H7M15 9h3"/></svg>'; // draw the uncertainty circle from this 68 % radius up

const state = {
  order: null,
  courier: null, // latest position frame
  stops: [],
  eta: { pickup: null, dropoff: null },
  stopsBefore: null,
  delay: null,
  assignedAt: null,
  statuses: [], // every status received, in order (for the page's own tests)
};

let view = null; // {L, map, pickup, dropoff, courier, circle, line}
let fitted = false;
let follow = true; // keep the courier in view until the user moves the map

const glide = new Glide((ll) => {
  if (!view || !view.courier) return;
  view.courier.setLatLng(ll);
  if (view.circle) view.circle.setLatLng(ll);
  drawRoute(ll);
});

function isOpen() {
  return state.order && !["delivered", "cancelled"].includes(state.order.status);
}

function onFrame(f) {
  switch (f.type) {
    case "snapshot":
      serviceClock.observe(f.now);
      state.order = f.order;
      state.stops = f.stops || [];
      state.eta = f.eta || { pickup: null, dropoff: null };
      state.stopsBefore = f.stops_before ?? null;
      // The last delay announced for the order (null: none, or the order is closed).
      state.delay = f.delay || null;
      if (state.delay && state.eta.dropoff == null) {
        state.eta = { ...state.eta, dropoff: state.delay.dropoff_eta };
      }
      if (f.courier) onPosition(f.courier);
      else state.courier = null;
      break;
    case "status":
      state.statuses.push(f.status);
      if (f.status === "assigned" && !state.assignedAt) state.assignedAt = f.t;
      if (f.status === "placed") {
        state.assignedAt = null;
        state.courier = null;
        state.stops = [];
        state.eta = { pickup: null, dropoff: null };
      }
      state.order = f.order;
      break;
    case "position":
      onPosition(f);
      break;
    case "eta":
      state.eta = { pickup: f.pickup_eta, dropoff: f.dropoff_eta };
      break;
    case "delay":
      state.delay = f;
      state.eta = { ...state.eta, dropoff: f.dropoff_eta };
      break;
    case "route":
      state.stops = f.stops || [];
      state.eta = f.eta || state.eta;
      state.stopsBefore = f.stops_before ?? null;
      break;
    default:
      return; // heartbeat, pong
  }
  render();
}

function onPosition(p) {
  state.courier = p;
  if (view && isOpen()) {
    ensureCourier();
    glide.moveTo([p.lat, p.lon]);
    if (follow && !view.map.getBounds().pad(-0.1).contains([p.lat, p.lon])) fit();
  }
}

function ensureCourier() {
  const { L, map } = view;
  const p = state.courier;
  if (!view.courier) {
    view.courier = L.marker([p.lat, p.lon], {
      icon: pinIcon(L, "courier", COURIER_SVG, 30),
      title: "Your courier",
      alt: "Your courier",
      keyboard: true,
      zIndexOffset: 1000,
    }).addTo(map);
  }
  const big = p.radius_m >= BIG_RADIUS_M;
  if (big && !view.circle) {
    view.circle = L.circle(glide.current || [p.lat, p.lon], {
      radius: p.radius_m,
      color: "#1a6b2a",
      weight: 1,
      fillOpacity: 0.12,
      interactive: false,
      className: "o2o-uncertainty",
    }).addTo(map);
  } else if (big) {
    view.circle.setRadius(p.radius_m);
  } else if (view.circle) {
    view.circle.remove();
    view.circle = null;
  }
}

function removeCourier() {
  if (!view) return;
  for (const k of ["courier", "circle", "line"]) {
    if (view[k]) view[k].remove();
    view[k] = null;
  }
}

function remainingStops() {
  const picked = state.order && RANK[state.order.status] >= RANK.picked_up;
  return state.stops.filter((s) => !(picked && s.kind === "pickup"));
}

function drawRoute(from) {
  if (!view) return;
  const pts = remainingStops().map((s) => [s.place.lat, s.place.lon]);
  if (!from || !pts.length || !isOpen()) {
    if (view.line) view.line.remove();
    view.line = null;
    return;
  }
  const latlngs = [from, ...pts];
  if (!view.line) {
    view.line = view.L.polyline(latlngs, {
      color: "#0a58a8",
      weight: 4,
      opacity: 0.8,
      dashArray: "8 6",
      interactive: false,
    }).addTo(view.map);
  } else {
    view.line.setLatLngs(latlngs);
  }
}

function renderMap() {
  if (!view || !state.order) return;
  const { L, map } = view;
  const o = state.order;
  if (!view.pickup) {
    view.pickup = L.marker([o.pickup.lat, o.pickup.lon], {
      icon: pinIcon(L, "pickup", "P"),
      title: "Pickup",
      alt: "Pickup",
    }).addTo(map);
    view.dropoff = L.marker([o.dropoff.lat, o.dropoff.lon], {
      icon: pinIcon(L, "dropoff", "D"),
      title: "Drop-off (you)",
      alt: "Drop-off",
    }).addTo(map);
  }
  if (isOpen() && state.courier) {
    ensureCourier();
    if (!glide.current) glide.moveTo([state.courier.lat, state.courier.lon]);
    drawRoute(glide.current);
  } else {
    removeCourier();
  }
  if (!fitted) {
    fitted = true;
    fit();
  }
  map.getContainer().dataset.markers = String(
    [view.pickup, view.dropoff, view.courier].filter(Boolean).length,
  );
}

function fit() {
  if (!view || !state.order) return;
  const o = state.order;
  const pts = [[o.dropoff.lat, o.dropoff.lon]];
  if (!isOpen() || RANK[o.status] < RANK.picked_up) pts.push([o.pickup.lat, o.pickup.lon]);
  if (state.courier && isOpen()) pts.push([state.courier.lat, state.courier.lon]);
  for (const s of remainingStops()) pts.push([s.place.lat, s.place.lon]);
  view.map.fitBounds(pts, { padding: [40, 40], maxZoom: 16, animate: false });
}

function renderTimeline() {
  const o = state.order;
  const status = o.status;
  const rank = status === "cancelled" ? -1 : RANK[status];
  const times = {
    placed: o.placed_at,
    assigned: state.assignedAt,
    picked_up: o.picked_up_at,
    delivered: o.delivered_at,
    cancelled: o.cancelled_at,
  };
  const done = (step) =>
    status === "cancelled" ? times[step] != null || step === "placed" : RANK[step] <= rank;
  for (const li of document.querySelectorAll("#timeline li")) {
    const step = li.dataset.step;
    const when = li.querySelector(".when");
    if (step === "delayed") {
      // The same figures as the summary: a delay announced earlier is shown with today's
      // ETA, and not at all once that ETA is back within a minute of the promise.
      const lateBy = lateness();
      li.hidden = !state.delay || !isOpen() || lateBy <= LATE_S;
      if (!li.hidden) {
        li.firstChild.textContent = `Running late — about ${duration(lateBy)}`;
        when.textContent = `(new ETA ${clock(state.eta.dropoff ?? state.delay.dropoff_eta)})`;
        li.dataset.state = "alert";
      }
      continue;
    }
    if (step === "cancelled") {
      li.hidden = status !== "cancelled";
      li.dataset.state = status === "cancelled" ? "done" : "todo";
      when.textContent = times.cancelled ? clock(times.cancelled) : "";
      continue;
    }
    if (step === "delivered" && status === "cancelled") {
      li.hidden = true;
      continue;
    }
    li.hidden = false;
    const isDone = done(step);
    li.dataset.state = isDone ? "done" : "todo";
    when.textContent = isDone && times[step] ? clock(times[step]) : "";
    if (step === status) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
  const shown = [...document.querySelectorAll("#timeline li")].filter((li) => !li.hidden);
  shown.forEach((li, i) => li.classList.toggle("last", i === shown.length - 1));
  const cancelled = document.querySelector('#timeline li[data-step="cancelled"]');
  if (status === "cancelled") cancelled.setAttribute("aria-current", "step");
  else cancelled.removeAttribute("aria-current");
}

const LATE_S = 60;

/** Seconds the current drop-off ETA is past the promise (a delay's own figure when the
 * order has no promise or no ETA yet); 0 when neither says anything. */
function lateness() {
  const o = state.order;
  if (o.promised_by != null && state.eta.dropoff != null) return state.eta.dropoff - o.promised_by;
  return state.delay ? state.delay.delay_s : 0;
}

function renderSummary() {
  const o = state.order;
  $("order-label").textContent = `Order ${o.id}`;
  $("headline").textContent = HEADLINE[o.status] || o.status;
  document.body.dataset.status = o.status;
  const now = serviceNow(); // the service's clock, not the phone's (o2o demo runs it faster)
  let running = false;
  if (o.status === "delivered") {
    $("eta").textContent = `Delivered at ${clock(o.delivered_at)}`;
  } else if (o.status === "cancelled") {
    $("eta").textContent = `Cancelled at ${clock(o.cancelled_at)}`;
  } else if (state.eta.dropoff) {
    const lateBy = lateness();
    running = lateBy > LATE_S;
    const late = running ? ` — running about ${duration(lateBy)} late` : "";
    const left = state.eta.dropoff - now;
    const soon = left < 90 ? "any minute now" : `in ${duration(left)}`;
    $("eta").textContent = `Arriving around ${clock(state.eta.dropoff)} (${soon})${late}`;
  } else {
    $("eta").textContent = "Arrival time will show once a courier is assigned.";
  }
  $("eta").classList.toggle("late", running);
  $("promise").textContent = !o.promised_by
    ? ""
    : isOpen()
      ? `Promised by ${clock(o.promised_by)} (${relative(o.promised_by, now)})`
      : `Promised by ${clock(o.promised_by)}`;
  const before = isOpen() && state.stopsBefore ? state.stopsBefore : 0;
  $("stops-before").textContent =
    before > 0 ? `Your courier has ${before} other stop${before > 1 ? "s" : ""} first.` : "";
  const c = state.courier;
  $("accuracy").textContent =
    isOpen() && c && c.radius_m >= BIG_RADIUS_M
      ? `Courier location is approximate (within about ${Math.round(c.radius_m)} m).`
      : "";
}

function render() {
  if (!state.order) return;
  renderSummary();
  renderTimeline();
  renderMap();
}

function onState(s) {
  showConnection($("conn"), s);
  if (s.state === "error") {
    const detail = s.reason ? ` (${s.reason})` : "";
    announce($("notice"), `${s.message}${detail}`, "error");
    document.body.dataset.error = String(s.code);
    $("headline").textContent = "This order cannot be shown";
  } else if (s.state === "offline") {
    announce($("notice"), "You are offline. Updates will resume when the connection is back.");
  } else if (s.state === "live") {
    announce($("notice"), "");
  }
}

async function main() {
  $("recenter").addEventListener("click", () => {
    follow = true;
    fit();
  });
  if (!token) {
    onState({ state: "error", code: 4401, message: "This link has no token; open the link you were sent." });
    return;
  }
  const socket = new LiveSocket(`/v1/orders/${encodeURIComponent(orderId)}/track`, {
    onFrame,
    onState,
  });
  window.o2oTrack = { state, socket, glide, onFrame }; // onFrame: tests replay frames
  socket.start();
  view = await createMap($("map"));
  if (view) {
    view.map.on("dragstart", () => (follow = false));
    view.map.on("resize", () => follow && fit());
  }
  render();
  startClockSync();
  // "in X min" stays current: every 30 s of the service clock (more often under a fast one).
  everyServiceSeconds(() => state.order && isOpen() && renderSummary(), 30, 1000, 30000);
}

main();

// Ops console: /ops?token=... (ops token). Fleet and open orders live from WS
// /v1/ops/live, an H3 layer (demand, idle couriers, lateness) with h3-js, service zones,
// open orders by risk of lateness, delay alerts, dispatch settings and what-if runs.
import {
  ApiError,
  LiveSocket,
  announce,
  api,
  clock,
  duration,
  el,
  everyServiceSeconds,
  serviceClock,
  serviceNow,
  showConnection,
  startClockSync,
  token,
} from "./common.js";
import { createMap, loadH3 } from "./map.js";

const $ = (id) => document.getElementById(id);
const RISK_WINDOW_S = 600; // an ETA within 10 min of the promise is "at risk"
const MAX_ALERTS = 50;
const RENDER_EVERY_MS = 250;

const state = {
  couriers: new Map(), // id -> courier (tracking.codec form)
  positions: new Map(), // id -> {lat, lon, radius_m, t}
  orders: new Map(), // open orders by id
  routes: new Map(), // courier id -> stops
  etas: new Map(), // order id -> {dropoff, t}
  delays: new Map(), // order id -> latest delay frame
  acks: new Map(), // courier id -> acknowledged route id
  sort: { key: "risk", dir: -1 },
  settings: null,
};
let view = null;
let h3 = null;
let socket = null;

// -- frames -----------------------------------------------------------------------------

function onFrame(f) {
  switch (f.type) {
    case "snapshot":
      serviceClock.observe(f.now);
      state.couriers = new Map(f.couriers.map((c) => [c.id, c]));
      state.positions = new Map(Object.entries(f.positions || {}));
      state.orders = new Map(f.orders.map((o) => [o.id, o]));
      state.routes.clear();
      state.etas.clear();
      // Every courier's current route (those with stops); live route frames follow.
      for (const [id, r] of Object.entries(f.routes || {})) setRoute(id, r.stops || [], f.now || 0);
      break;
    case "order":
      if (["delivered", "cancelled"].includes(f.order.status)) {
        state.orders.delete(f.order.id);
        state.delays.delete(f.order.id);
        state.etas.delete(f.order.id);
      } else state.orders.set(f.order.id, f.order);
      break;
    case "courier":
      state.couriers.set(f.courier.id, f.courier);
      break;
    case "position":
      state.positions.set(f.courier_id, f);
      moveCourier(f.courier_id);
      scheduleRender(false);
      return;
    case "route":
      setRoute(f.courier_id, f.stops, f.t);
      break;
    case "delay":
      state.delays.set(f.order_id, f);
      state.etas.set(f.order_id, { dropoff: f.dropoff_eta, t: f.t });
      addAlert(f);
      dirtyAll = true;
      renderNow(); // alerts and the late row show at once, not on the next tick
      return;
    case "ack":
      state.acks.set(f.courier_id, f.route_id);
      break;
    case "config":
      if (f.event === "zones_updated") loadZones();
      if (f.event === "settings_updated" && !$("settings-form").dataset.dirty) loadSettings();
      return;
    default:
      return;
  }
  scheduleRender(true);
}

function setRoute(courierId, stops, t) {
  state.routes.set(courierId, stops);
  for (const s of stops) {
    if (s.kind !== "dropoff") continue;
    const prev = state.etas.get(s.order_id);
    if (!prev || prev.t <= t) state.etas.set(s.order_id, { dropoff: s.eta, t });
  }
}

// -- risk -------------------------------------------------------------------------------

function risk(o, now) {
  const eta = state.etas.get(o.id);
  const dropoff = eta ? eta.dropoff : null;
  // With an ETA: how late it will be. Without one (unassigned): how late it already is.
  const lateness = dropoff != null ? dropoff - o.promised_by : now - o.promised_by;
  const level = lateness > 0 ? "late" : lateness > -RISK_WINDOW_S ? "risk" : "ok";
  return { eta: dropoff, lateness, level };
}

function courierBusy(id) {
  const c = state.couriers.get(id);
  const stops = state.routes.get(id);
  return (stops && stops.length > 0) || (c && c.on_board && c.on_board.length > 0);
}

// -- rendering --------------------------------------------------------------------------

let renderTimer = 0;
let lastRender = 0;
let dirtyAll = false;

function scheduleRender(all) {
  dirtyAll = dirtyAll || all;
  if (renderTimer) return;
  const wait = Math.max(0, RENDER_EVERY_MS - (performance.now() - lastRender));
  renderTimer = setTimeout(() => requestAnimationFrame(renderNow), wait);
}

function renderNow() {
  clearTimeout(renderTimer);
  renderTimer = 0;
  lastRender = performance.now();
  const all = dirtyAll;
  dirtyAll = false;
  const now = serviceNow(); // the service's clock (o2o demo runs it faster than the wall)
  const rows = [...state.orders.values()].map((o) => ({ o, r: risk(o, now) }));
  if (all) renderTable(rows);
  renderMarkers(rows, all);
  renderCells(rows);
  renderSummary(rows);
}

function renderSummary(rows) {
  const onShift = [...state.couriers.values()].filter((c) => c.on_shift);
  const idle = onShift.filter((c) => !courierBusy(c.id)).length;
  const late = rows.filter((x) => x.r.level === "late").length;
  $("summary").textContent =
    `${onShift.length} couriers on shift (${idle} idle) · ${rows.length} open orders · ${late} late`;
  $("orders-count").textContent = `(${rows.length})`;
}

const SORTS = {
  id: (x) => x.o.id,
  status: (x) => x.o.status,
  courier: (x) => x.o.courier_id || "",
  promised: (x) => x.o.promised_by,
  eta: (x) => x.r.eta ?? Infinity,
  risk: (x) => x.r.lateness,
};

function renderTable(rows) {
  const { key, dir } = state.sort;
  const get = SORTS[key];
  rows.sort((a, b) => {
    const va = get(a);
    const vb = get(b);
    return (va < vb ? -1 : va > vb ? 1 : 0) * dir || a.o.id.localeCompare(b.o.id);
  });
  const body = $("orders").tBodies[0];
  body.replaceChildren(
    ...rows.map(({ o, r }) => {
      const margin = r.lateness > 0
        ? `${duration(r.lateness)} late`
        : `${duration(-r.lateness)} to spare`;
      const text = { late: `Late +${duration(r.lateness)}`, risk: "At risk", ok: "On time" }[r.level];
      const badge = el("span", { class: `badge ${r.level}`, title: margin, text });
      return el(
        "tr",
        { dataset: { order: o.id, risk: r.level } },
        el("td", { class: "id", title: o.id, text: o.id }),
        el("td", { text: o.status.replace("_", " ") }),
        el("td", { text: o.courier_id || "—" }),
        el("td", { class: "num", text: clock(o.promised_by) }),
        el("td", { class: "num", text: clock(r.eta) }),
        el("td", {}, badge, el("span", { class: "visually-hidden", text: ` (${margin})` })),
      );
    }),
  );
  for (const th of $("orders").tHead.rows[0].cells) {
    if (th.dataset.key === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
}

function addAlert(f) {
  const o = state.orders.get(f.order_id);
  const who = o && o.courier_id ? ` (courier ${o.courier_id})` : "";
  const li = el("li", { dataset: { order: f.order_id } },
    el("strong", { text: `${clock(f.t)} · Order ${f.order_id}` }),
    ` predicted ${duration(f.delay_s)} late${who}: ETA ${clock(f.dropoff_eta)}, promised ${clock(f.promised_by)}.`);
  const list = $("alerts");
  list.prepend(li);
  while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
  $("no-alerts").hidden = true;
}

// -- map --------------------------------------------------------------------------------

/** Tooltip content as text (Leaflet would read a string as HTML). */
const text = (s) => el("span", { text: s });

const COLORS = { late: "#b3141f", risk: "#8a4b00", ok: "#0a58a8" };

function courierStyle(id) {
  const busy = courierBusy(id);
  return { radius: 7, color: "#fff", weight: 2, fillColor: busy ? "#1a6b2a" : "#5b6470", fillOpacity: 1 };
}

function moveCourier(id) {
  if (!view) return;
  const p = state.positions.get(id);
  const m = view.courierMarkers.get(id);
  if (m && p) m.setLatLng([p.lat, p.lon]);
}

function courierLatLng(c) {
  const p = state.positions.get(c.id);
  if (p) return [p.lat, p.lon];
  return c.position && c.position.point ? c.position.point : null;
}

function renderMarkers(rows, all) {
  if (!view) return;
  const { L } = view;
  const seen = new Set();
  for (const c of state.couriers.values()) {
    const at = courierLatLng(c);
    if (!c.on_shift || !at) continue;
    seen.add(c.id);
    let m = view.courierMarkers.get(c.id);
    if (!m) {
      m = L.circleMarker(at, { ...courierStyle(c.id), renderer: view.canvas });
      m.bindTooltip(text(`Courier ${c.id}`)); // ids are the couriers' own: never HTML
      m.addTo(view.couriers);
      view.courierMarkers.set(c.id, m);
    } else {
      m.setLatLng(at);
      m.setStyle(courierStyle(c.id));
    }
  }
  for (const [id, m] of view.courierMarkers) {
    if (!seen.has(id)) {
      m.remove();
      view.courierMarkers.delete(id);
    }
  }
  if (all) {
    view.routes.clearLayers();
    for (const [id, stops] of state.routes) {
      const c = state.couriers.get(id);
      const at = c && c.on_shift ? courierLatLng(c) : null;
      if (!at || !stops.length) continue;
      L.polyline([at, ...stops.map((s) => [s.place.lat, s.place.lon])], {
        color: "#1a6b2a",
        weight: 2,
        opacity: 0.7,
        dashArray: "4 4",
        interactive: false,
        renderer: view.canvas,
      }).addTo(view.routes);
    }
    view.orders.clearLayers();
  }
  for (const { o, r } of all ? rows : []) {
    const at = o.status === "picked_up" ? o.dropoff : o.pickup;
    L.circleMarker([at.lat, at.lon], {
      radius: 5,
      color: COLORS[r.level],
      weight: 2,
      fillColor: "#fff",
      fillOpacity: 1,
      renderer: view.canvas,
    })
      .bindTooltip(text(`Order ${o.id} · ${o.status.replace("_", " ")} · promised ${clock(o.promised_by)}`))
      .addTo(view.orders);
  }
  if (!view.fitted) {
    const pts = [
      ...[...state.couriers.values()].filter((c) => c.on_shift).map(courierLatLng).filter(Boolean),
      ...rows.map(({ o }) => [o.pickup.lat, o.pickup.lon]),
    ];
    if (view.zones && view.zones.getLayers().length) {
      const b = view.zones.getBounds();
      pts.push(b.getNorthWest(), b.getSouthEast());
    }
    if (pts.length) {
      view.fitted = true;
      view.map.fitBounds(view.L.latLngBounds(pts), { padding: [30, 30], maxZoom: 15, animate: false });
    }
  }
  view.map.getContainer().dataset.markers = String(view.courierMarkers.size + rows.length);
}

const RAMP = ["#fff5d6", "#fdd49e", "#fc8d59", "#d7301f", "#7f0000"];

function renderCells(rows) {
  if (!view || !h3) return;
  const metric = $("metric").value;
  const res = Number($("res").value);
  const counts = new Map();
  const add = (lat, lon, v) => {
    const cell = h3.latLngToCell(lat, lon, res);
    counts.set(cell, (counts.get(cell) || 0) + v);
  };
  if (metric === "demand") {
    for (const { o } of rows) if (o.status !== "picked_up") add(o.pickup.lat, o.pickup.lon, 1);
  } else if (metric === "idle") {
    for (const c of state.couriers.values()) {
      const at = courierLatLng(c);
      if (c.on_shift && at && !courierBusy(c.id)) add(at[0], at[1], 1);
    }
  } else if (metric === "lateness") {
    for (const { o, r } of rows) if (r.lateness > 0) add(o.dropoff.lat, o.dropoff.lon, r.lateness / 60);
  }
  view.cells.clearLayers();
  const max = Math.max(0, ...counts.values());
  for (const [cell, v] of counts) {
    const k = max > 0 ? Math.min(RAMP.length - 1, Math.floor((v / max) * RAMP.length - 1e-9)) : 0;
    L_polygon(cell, v, RAMP[Math.max(0, k)]);
  }
  const unit = { demand: "orders", idle: "idle couriers", lateness: "late min" }[metric];
  $("legend").replaceChildren(
    ...(metric === "none" || !max
      ? [metric === "none" ? "" : `No ${unit} to show`]
      : [
          `0`,
          ...RAMP.map((c) => el("span", { class: "swatch", style: `background:${c}`, "aria-hidden": "true" })),
          `${Math.round(max * 10) / 10} ${unit} per cell`,
        ]),
  );
  view.map.getContainer().dataset.cells = String(counts.size);
}

function L_polygon(cell, v, color) {
  const { L } = view;
  const ring = h3.cellToBoundary(cell); // [lat, lng] pairs
  L.polygon(ring, {
    color: "#5b3a00",
    weight: 1,
    opacity: 0.6,
    fillColor: color,
    fillOpacity: 0.55,
    renderer: view.canvas,
  })
    .bindTooltip(text(`${cell}: ${Math.round(v * 10) / 10}`))
    .addTo(view.cells);
}

async function loadZones() {
  try {
    const gj = await api("/v1/zones");
    if (!view) return;
    view.zones.clearLayers();
    view.zones.addData(gj);
    view.map.getContainer().dataset.zones = String(gj.features.length);
  } catch (e) {
    fail(e);
  }
}

function toggleLayer(id, layer) {
  const on = $(id).checked;
  if (on) layer.addTo(view.map);
  else layer.remove();
}

// -- settings ---------------------------------------------------------------------------

const NULLABLE_INT = new Set(["solution_limit"]);

async function loadSettings() {
  try {
    state.settings = await api("/v1/dispatch/settings");
  } catch (e) {
    return fail(e);
  }
  const box = $("settings");
  box.replaceChildren();
  for (const [k, v] of Object.entries(state.settings)) {
    const id = `set-${k}`;
    const label = el("label", { for: id, text: k.replaceAll("_", " ") });
    let input;
    if (typeof v === "boolean") {
      input = el("input", { id, type: "checkbox", name: k, dataset: { type: "bool" } });
      input.checked = v;
    } else {
      const integer = Number.isInteger(v) || NULLABLE_INT.has(k);
      input = el("input", {
        id,
        name: k,
        type: "number",
        step: integer ? "1" : "any",
        placeholder: v == null ? "none" : null,
        dataset: { type: integer ? "int" : "float" },
      });
      input.value = v == null ? "" : String(v);
    }
    box.append(label, input);
  }
  delete $("settings-form").dataset.dirty;
}

function formSettings() {
  const out = {};
  for (const input of $("settings").querySelectorAll("input")) {
    if (input.dataset.type === "bool") out[input.name] = input.checked;
    else if (input.value !== "") {
      out[input.name] = input.dataset.type === "int" ? parseInt(input.value, 10) : parseFloat(input.value);
    }
  }
  return out;
}

async function saveSettings(ev) {
  ev.preventDefault();
  $("settings-save").disabled = true;
  try {
    state.settings = await api("/v1/dispatch/settings", { method: "PUT", body: formSettings() });
    await loadSettings();
    $("settings-state").textContent = `Saved at ${clock(serviceNow())}.`;
  } catch (e) {
    const errs = e.body && e.body.errors ? ` ${JSON.stringify(e.body.errors)}` : "";
    $("settings-state").textContent = `Not saved: ${e.message}${errs}`;
  } finally {
    $("settings-save").disabled = false;
  }
}

// -- what-if ----------------------------------------------------------------------------

let whatifRun = 0;

async function runWhatif(ev) {
  ev.preventDefault();
  const out = $("wi-state");
  const result = $("wi-result");
  result.replaceChildren();
  let settings;
  try {
    settings = JSON.parse($("wi-settings").value || "{}");
    if (typeof settings !== "object" || Array.isArray(settings) || settings === null) throw new Error();
  } catch {
    out.dataset.state = "invalid";
    out.textContent = "Settings must be a JSON object, e.g. {\"lateness_weight\": 5}.";
    return;
  }
  const body = { settings };
  const scale = parseFloat($("wi-scale").value);
  if (Number.isFinite(scale)) body.couriers_scale = scale;
  if ($("wi-policy").value) body.policy = $("wi-policy").value;
  const run = ++whatifRun;
  $("wi-run").disabled = true;
  try {
    let job;
    try {
      job = await api("/v1/whatif", { method: "POST", body });
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405)) {
        out.dataset.state = "unavailable";
        out.textContent =
          "What-if simulations are not available on this server yet (POST /v1/whatif answered " +
          `${e.status}). Ask for a service version with the what-if API.`;
        return;
      }
      throw e;
    }
    out.dataset.state = "running";
    out.textContent = `Running what-if ${job.id}…`;
    let delay = 500;
    for (;;) {
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(3000, delay * 1.5);
      if (run !== whatifRun) return; // a newer run replaced this one
      job = await api(`/v1/whatif/${encodeURIComponent(job.id)}`);
      if (job.status === "running") continue;
      break;
    }
    if (job.status === "failed") {
      out.dataset.state = "failed";
      out.textContent = `What-if ${job.id} failed: ${job.error || "no reason given"}`;
      return;
    }
    out.dataset.state = "done";
    out.textContent = `What-if ${job.id} done${job.scenario ? ` (scenario: ${job.scenario})` : ""}.`;
    showKpis(job);
  } catch (e) {
    out.dataset.state = "failed";
    out.textContent = `What-if could not run: ${e.message}`;
  } finally {
    $("wi-run").disabled = false;
  }
}

function fmt(v) {
  if (typeof v !== "number") return v == null ? "—" : String(v);
  return v.toLocaleString(undefined, { maximumFractionDigits: Math.abs(v) < 10 ? 3 : 1 });
}

function showKpis(job) {
  const base = (job.kpis && job.kpis.baseline) || {};
  const variant = (job.kpis && job.kpis.variant) || {};
  const keys = [...new Set([...Object.keys(base), ...Object.keys(variant)])];
  const rows = keys.map((k) => {
    const a = base[k];
    const b = variant[k];
    const both = typeof a === "number" && typeof b === "number";
    const delta = both ? b - a : null;
    const pct = both && a !== 0 ? ` (${delta > 0 ? "+" : ""}${((delta / Math.abs(a)) * 100).toFixed(1)} %)` : "";
    return el("tr", { dataset: { kpi: k } },
      el("th", { scope: "row", text: k.replaceAll("_", " ") }),
      el("td", { class: "num", text: fmt(a) }),
      el("td", { class: "num", text: fmt(b) }),
      el("td", { class: "num", text: delta == null ? "—" : `${delta > 0 ? "+" : ""}${fmt(delta)}${pct}` }));
  });
  const table = el("table", { id: "wi-kpis" },
    el("caption", { class: "visually-hidden", text: "KPIs: baseline and variant" }),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col", text: "KPI" }),
      el("th", { scope: "col", class: "num", text: "Baseline" }),
      el("th", { scope: "col", class: "num", text: "Variant" }),
      el("th", { scope: "col", class: "num", text: "Change" }))),
    el("tbody", {}, ...rows));
  const result = $("wi-result");
  result.replaceChildren(el("div", { class: "table-wrap" }, table));
  if (job.notes && job.notes.length) {
    result.append(el("ul", { class: "muted" }, ...job.notes.map((n) => el("li", { text: n }))));
  }
  // The report endpoint takes the token as ?token= so that a plain link can open it.
  const report = new URL(job.report_url || `/v1/whatif/${encodeURIComponent(job.id)}/report`, location.href);
  report.searchParams.set("token", token);
  const baseline = new URL(report);
  baseline.searchParams.set("run", "baseline");
  result.append(el("p", { class: "row mt" },
    el("a", { class: "button", id: "wi-report", href: report, target: "_blank", rel: "noopener noreferrer", text: "Open the report" }),
    el("a", { class: "button secondary", id: "wi-report-baseline", href: baseline, target: "_blank", rel: "noopener noreferrer", text: "Baseline report" })));
}

function settingsDiff() {
  const now = formSettings();
  const diff = {};
  for (const [k, v] of Object.entries(now)) if (!state.settings || state.settings[k] !== v) diff[k] = v;
  $("wi-settings").value = JSON.stringify(diff, null, 1);
}

// -- page -------------------------------------------------------------------------------

function fail(e) {
  announce($("notice"), e instanceof ApiError ? `${e.message} (${e.status})` : String(e.message || e), "error");
}

function onState(s) {
  showConnection($("conn"), s);
  if (s.state === "error") {
    announce($("notice"), `${s.message}${s.reason ? ` (${s.reason})` : ""}`, "error");
    document.body.dataset.error = String(s.code);
  }
}

async function main() {
  window.o2oOps = { state, socket: null };
  if (!token) {
    announce($("notice"), "Open this page with ?token=<ops token>.", "error");
    return;
  }
  for (const th of $("orders").tHead.rows[0].cells) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : key === "risk" ? -1 : 1 };
      scheduleRender(true);
    });
  }
  $("settings-form").addEventListener("submit", saveSettings);
  $("settings-form").addEventListener("input", () => ($("settings-form").dataset.dirty = "1"));
  $("whatif-form").addEventListener("submit", runWhatif);
  $("wi-from-form").addEventListener("click", settingsDiff);
  $("layers").addEventListener("submit", (e) => e.preventDefault());
  for (const id of ["metric", "res"]) $(id).addEventListener("change", () => scheduleRender(false));

  socket = new LiveSocket("/v1/ops/live", { onFrame, onState });
  window.o2oOps.socket = socket;
  socket.start();
  loadSettings();
  startClockSync();
  // Lateness of unassigned orders grows: every 60 s of the service clock, 2-15 s of ours.
  everyServiceSeconds(() => scheduleRender(true), 60, 2000, 15000);

  const [v, h] = await Promise.all([createMap($("map")), loadH3()]);
  h3 = h;
  if (v) {
    const { L, map } = v;
    view = {
      ...v,
      canvas: L.canvas({ padding: 0.2 }),
      courierMarkers: new Map(),
      fitted: false,
    };
    view.zones = L.geoJSON(null, {
      style: { color: "#5a2ca0", weight: 2, dashArray: "6 4", fillOpacity: 0.04 },
      onEachFeature: (feat, layer) =>
        layer.bindTooltip(text(`Zone ${(feat.properties && feat.properties.name) || feat.id || ""}`)),
    }).addTo(map);
    view.cells = L.layerGroup().addTo(map);
    view.routes = L.layerGroup().addTo(map);
    view.orders = L.layerGroup().addTo(map);
    view.couriers = L.layerGroup().addTo(map);
    $("show-couriers").addEventListener("change", () => {
      toggleLayer("show-couriers", view.couriers);
      toggleLayer("show-couriers", view.routes);
    });
    $("show-orders").addEventListener("change", () => toggleLayer("show-orders", view.orders));
    $("show-zones").addEventListener("change", () => toggleLayer("show-zones", view.zones));
    await loadZones();
  }
  if (!h3) $("legend").textContent = "H3 layer unavailable (h3-js is not installed).";
  dirtyAll = true;
  renderNow();
}

main();

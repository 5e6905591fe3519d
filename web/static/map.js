// The map: Leaflet from the service's own /assets (npm package, no CDN), optional base
// tiles, and the smooth courier marker. When the library is not installed the pages
// still work without a map and say so.
import { config, el } from "./common.js";

let leafletPromise = null;

/** The Leaflet module, or null when it is not installed (see api/web.py). */
export function loadLeaflet() {
  if (!leafletPromise) {
    leafletPromise = (async () => {
      if ((config.missing || []).includes("leaflet")) return null;
      try {
        return await import(config.assets.leaflet);
      } catch (err) {
        console.error("map library failed to load", err);
        return null;
      }
    })();
  }
  return leafletPromise;
}

let h3Promise = null;

/** The h3-js module, or null when it is not installed. */
export function loadH3() {
  if (!h3Promise) {
    h3Promise = (async () => {
      if ((config.missing || []).includes("h3-js")) return null;
      try {
        return await import(config.assets.h3);
      } catch (err) {
        console.error("h3-js failed to load", err);
        return null;
      }
    })();
  }
  return h3Promise;
}

function missingNotice(container, what) {
  container.dataset.map = "missing";
  container.append(
    el(
      "div",
      { class: "map-missing", role: "alert" },
      el("p", {},
        el("strong", { text: `The ${what} is not installed. ` }),
        `The map cannot be shown; everything else works. To fix: ${config.setup_hint || "run npm ci in web/"}.`),
    ),
  );
}

/**
 * A Leaflet map in ``container`` ({L, map} or null). With O2O_TILES_URL the page gets
 * base tiles; without, a plain background (zones, cells, routes and markers still show).
 */
export async function createMap(container, { center = [52.52, 13.405], zoom = 13 } = {}) {
  const L = await loadLeaflet();
  if (!L) {
    missingNotice(container, "map library (Leaflet)");
    return null;
  }
  const map = L.map(container, {
    center,
    zoom,
    zoomControl: true,
    attributionControl: true,
    preferCanvas: false,
    keyboard: true,
  });
  const tiles = config.tiles || {};
  if (tiles.url) {
    L.tileLayer(tiles.url, {
      maxZoom: tiles.max_zoom || 19,
      attribution: tiles.attribution || "",
    }).addTo(map);
  }
  map.attributionControl.setPrefix("Leaflet");
  L.control.scale({ imperial: false }).addTo(map);
  container.dataset.map = "ready";
  return { L, map };
}

/** A round labelled marker icon (no image files needed). */
export function pinIcon(L, kind, label = "", size = 28) {
  return L.divIcon({
    className: "",
    html: `<div class="pin ${kind}" aria-hidden="true">${label}</div>`,
    iconSize: [size, size],
    iconAnchor: [size / 2, size / 2],
  });
}

const reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;

/**
 * Moves a marker smoothly between position fixes with requestAnimationFrame: each new
 * fix starts a linear glide from where the marker is drawn now, lasting about as long
 * as the gap between fixes, so motion is continuous at any update rate. Only transforms
 * and SVG paths change per frame; nothing reads layout. The loop stops when idle.
 */
export class Glide {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.from = null;
    this.to = null;
    this.start = 0;
    this.duration = 1000;
    this.lastFixAt = 0;
    this.gap = 1000;
    this.raf = 0;
    this.current = null;
    this.frames = 0;
    this.fixes = 0;
    this._tick = this._tick.bind(this);
  }

  /** A new fix [lat, lon]. */
  moveTo(latlng) {
    const now = performance.now();
    this.fixes += 1;
    if (this.lastFixAt) this.gap = 0.7 * this.gap + 0.3 * Math.min(5000, now - this.lastFixAt);
    this.lastFixAt = now;
    if (!this.current || reduceMotion) {
      this.current = latlng;
      this.to = latlng;
      this.onFrame(latlng);
      return;
    }
    this.from = this.current;
    this.to = latlng;
    this.start = now;
    this.duration = Math.max(250, Math.min(2000, this.gap));
    if (!this.raf) this.raf = requestAnimationFrame(this._tick);
  }

  _tick(now) {
    const k = Math.min(1, (now - this.start) / this.duration);
    const lat = this.from[0] + (this.to[0] - this.from[0]) * k;
    const lon = this.from[1] + (this.to[1] - this.from[1]) * k;
    this.current = [lat, lon];
    this.frames += 1;
    this.onFrame(this.current);
    this.raf = k < 1 ? requestAnimationFrame(this._tick) : 0;
  }
}

"""Reproduce the UJIIndoorLoc extract in this folder and turn it into o2o observations.

    python convert.py extract validationData.csv validation_rows1-91_wap001-100.csv
    python convert.py observations validation_rows1-91_wap001-100.csv OUTDIR

``extract`` keeps the first ``ROWS`` data rows of UJIIndoorLoc's ``validationData.csv`` and
the columns ``WAP001``..``WAP100`` plus the nine label columns, values unchanged (RSSI in
dBm, ``100`` = not detected; coordinates in EPSG:3857 metres). ``observations`` writes
``learn.jsonl`` (GPS-tagged scans), ``test.jsonl`` (scans only) and ``truth.jsonl`` in the
format ``o2o geo learn`` / ``o2o geo fuse`` read; see README.md for the conversion.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROWS = 91
"""Data rows 1..ROWS of validationData.csv (row 1 = the line after the header)."""
WAPS = 100
"""Columns WAP001..WAP100 are kept."""
LABELS = (
    "LONGITUDE",
    "LATITUDE",
    "FLOOR",
    "BUILDINGID",
    "SPACEID",
    "RELATIVEPOSITION",
    "USERID",
    "PHONEID",
    "TIMESTAMP",
)
NOT_DETECTED = 100
"""UJIIndoorLoc's RSSI value for "access point not heard in this scan"."""
WEB_MERCATOR_RADIUS_M = 6378137.0
GPS_ACCURACY_M = 10.0
"""68 % radius given to the surveyed positions when they stand in for phone GPS fixes."""
HOLDOUT_EVERY = 3
"""Rows whose number is a multiple of this are held out (scans only, for ``fuse``)."""


def wap_columns() -> list[str]:
    return [f"WAP{i:03d}" for i in range(1, WAPS + 1)]


def web_mercator_to_wgs84(x: float, y: float) -> tuple[float, float]:
    """EPSG:3857 metres to WGS84 ``(lat, lon)`` degrees (spherical Web Mercator)."""
    lon = math.degrees(x / WEB_MERCATOR_RADIUS_M)
    lat = math.degrees(2.0 * math.atan(math.exp(y / WEB_MERCATOR_RADIUS_M)) - math.pi / 2.0)
    return lat, lon


def bssid(column: str) -> str:
    """UJIIndoorLoc anonymises access points as WAP001..WAP520; o2o ids are lower case."""
    return f"uji-{column.lower()}"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One row of the extract: where it was taken and the access points heard."""

    row: int
    lat: float
    lon: float
    floor: int
    building: int
    phone: int
    t: float
    aps: tuple[tuple[str, int], ...]
    """``(bssid, rssi dBm)`` of the detected access points only."""


def read_extract(path: str | Path) -> list[Fingerprint]:
    out: list[Fingerprint] = []
    with Path(path).open(newline="") as fh:
        for row, rec in enumerate(csv.DictReader(fh), 1):
            lat, lon = web_mercator_to_wgs84(float(rec["LONGITUDE"]), float(rec["LATITUDE"]))
            aps = tuple(
                (bssid(col), int(rec[col]))
                for col in wap_columns()
                if int(rec[col]) != NOT_DETECTED
            )
            out.append(
                Fingerprint(
                    row,
                    lat,
                    lon,
                    int(rec["FLOOR"]),
                    int(rec["BUILDINGID"]),
                    int(rec["PHONEID"]),
                    float(rec["TIMESTAMP"]),
                    aps,
                )
            )
    return out


def is_held_out(fp: Fingerprint, every: int = HOLDOUT_EVERY) -> bool:
    return fp.row % every == 0


def device(fp: Fingerprint) -> str:
    """One device per row: each scan pairs with its own fix, each test scan stands alone."""
    return f"uji-row{fp.row:03d}"


def wifi_record(fp: Fingerprint) -> dict[str, Any]:
    """The scan as o2o reads it; a row that heard none of the kept APs has ``aps == []``
    (o2o rejects it as ``empty_scan``)."""
    return {
        "device": device(fp),
        "t": fp.t,
        "kind": "wifi",
        "aps": [{"bssid": b, "rssi": r} for b, r in fp.aps],
    }


def learn_records(
    fps: list[Fingerprint], gps_accuracy_m: float = GPS_ACCURACY_M
) -> list[dict[str, Any]]:
    """A GPS fix at the surveyed position, then the scan, for every row not held out."""
    out: list[dict[str, Any]] = []
    for fp in fps:
        if is_held_out(fp):
            continue
        out.append(
            {
                "device": device(fp),
                "t": fp.t,
                "kind": "gps",
                "lat": fp.lat,
                "lon": fp.lon,
                "accuracy": gps_accuracy_m,
            }
        )
        out.append(wifi_record(fp))
    return out


def held_out_records(fps: list[Fingerprint]) -> list[dict[str, Any]]:
    return [wifi_record(fp) for fp in fps if is_held_out(fp)]


def extract(src: str | Path, dst: str | Path) -> None:
    """Write the extract from UJIIndoorLoc's original ``validationData.csv``."""
    with Path(src).open(newline="") as fh, Path(dst).open("w", newline="") as out:
        reader = csv.DictReader(fh)
        writer = csv.writer(out, lineterminator="\n")
        cols = wap_columns() + list(LABELS)
        writer.writerow(cols)
        for n, rec in enumerate(reader, 1):
            if n > ROWS:
                break
            writer.writerow([rec[c] for c in cols])


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "extract":
        extract(argv[1], argv[2])
        return 0
    if len(argv) == 3 and argv[0] == "observations":
        fps = read_extract(argv[1])
        outdir = Path(argv[2])
        outdir.mkdir(parents=True, exist_ok=True)
        _write_jsonl(outdir / "learn.jsonl", learn_records(fps))
        _write_jsonl(outdir / "test.jsonl", held_out_records(fps))
        truth = [
            {"device": device(fp), "lat": fp.lat, "lon": fp.lon, "floor": fp.floor}
            for fp in fps
            if is_held_out(fp)
        ]
        _write_jsonl(outdir / "truth.jsonl", truth)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

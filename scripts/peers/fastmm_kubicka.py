#!/usr/bin/env python3
"""Runs FMM (PyPI `fastmm`, a C++ implementation of the FMM paper) on the Kubicka tracks, for
a side-by-side accuracy and speed comparison with `pipeline` (scripts/kubicka.sh).

usage: fastmm_kubicka.py KUBICKA_ROOT PIPELINE_OUT_STEP_DIR OUT_DIR STEP_S

The road network of each track is taken from the segments.parquet that `pipeline graph
export` wrote for it (one directed segment per Kubicka arc, osm_way_id = arc id, WKT
geometry in lon/lat), projected to local metres. Probes are every STEP_S-th 1 Hz fix.
Writes OUT_DIR/ID.txt (matched way ids in driving order) for score_kubicka.py --many, and
prints the probes/s of the match calls alone (network build and UBODT not timed).
Settings: k = 8, r = 50 m, gps_error 30 m, reverse tolerance 20 m, UBODT delta 3 km.

STATUS: first version, not yet validated end to end. Its first run matched track 00000000,
then spent more than 8 minutes (and 7.7 GB of UBODT cache) on the next large network with
a 3 km delta (over 200 M rows). The next step is a smaller delta (e.g. 1 km), or a
per-track delta from the track's extent, before its figures go into BENCHMARKS.md.
"""
import csv
import math
import os
import sys
import time

import fastmm
import pyarrow.parquet as pq

K, RADIUS_M, GPS_ERROR_M, REVERSE_TOLERANCE_M, UBODT_DELTA_M = 8, 50.0, 30.0, 20.0, 3000.0
R_EARTH = 6371008.8


def projector(lat0, lon0):
    ky = math.radians(1) * R_EARTH
    kx = ky * math.cos(math.radians(lat0))
    return lambda lon, lat: ((lon - lon0) * kx, (lat - lat0) * ky)


def parse_wkt(wkt):
    body = wkt[wkt.index("(") + 1 : wkt.rindex(")")]
    return [tuple(map(float, p.split())) for p in body.split(",")]


def main():
    root, seg_root, out_dir, step = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    os.makedirs(out_dir, exist_ok=True)
    total_probes, total_s = 0, 0.0
    for track in sorted(os.listdir(root)):
        tdir = os.path.join(root, track)
        if not os.path.isdir(tdir):
            continue
        with open(os.path.join(tdir, "probes.csv")) as f:
            rows = list(csv.DictReader(f))[::step]
        segs = pq.read_table(os.path.join(seg_root, track, "segments.parquet")).to_pydict()
        lat0 = float(rows[0]["lat"])
        lon0 = float(rows[0]["lon"])
        proj = projector(lat0, lon0)
        net = fastmm.Network()
        for way, a, b, wkt in zip(segs["osm_way_id"], segs["from_node_id"], segs["to_node_id"], segs["geometry"]):
            geom = [proj(lon, lat) for lon, lat in parse_wkt(wkt)]
            net.add_edge(int(way), source=int(a), target=int(b), geom=geom)
        net.finalize()
        matcher = fastmm.FastMapMatch(
            net,
            fastmm.TransitionMode.SHORTEST,
            max_distance_between_candidates=UBODT_DELTA_M,
            cache_dir=os.path.join(out_dir, "ubodt_cache", track),
        )
        traj = fastmm.Trajectory.from_xyt_tuples(
            [(*proj(float(r["lon"]), float(r["lat"])), int(r["ts_ms"]) / 1000.0) for r in rows]
        )
        started = time.perf_counter()
        result = matcher.match(
            traj,
            max_candidates=K,
            candidate_search_radius=RADIUS_M,
            gps_error=GPS_ERROR_M,
            reverse_tolerance=REVERSE_TOLERANCE_M,
        )
        total_s += time.perf_counter() - started
        total_probes += len(rows)
        path = []
        for sub in result.subtrajectories:
            if sub.error_code != fastmm.MatchErrorCode.SUCCESS:
                continue
            for segment in sub.segments:
                for edge in segment.edges:
                    if not path or path[-1] != edge.edge_id:
                        path.append(edge.edge_id)
        with open(os.path.join(out_dir, f"{track}.txt"), "w") as f:
            f.write("".join(f"{w}\n" for w in path))
    print(f"fastmm: {total_probes} probes matched in {total_s:.3f} s of match calls "
          f"({total_probes / max(total_s, 1e-9):.0f} probes/s, one thread)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Peer map matcher FMM (PyPI `fastmm` 0.3.2, a C++ implementation of the FMM paper with a
precomputed UBODT) on the 30 Kubicka tracks, for an accuracy and speed comparison with
`pipeline` (scripts/kubicka.sh) and with OSRM (osrm_kubicka.py), scored by the same scorer
(../shared/scripts/score_kubicka.py --many ROOT --outputs OUT_DIR).

usage: fastmm_kubicka.py KUBICKA_ROOT SEGMENTS_ROOT OUT_DIR STEP_S
           [--delta M] [--gps-error M[,M...]] [--tracks ID,ID,...] [--cache DIR]

KUBICKA_ROOT   ../shared/data/kubicka (ID/probes.csv)
SEGMENTS_ROOT  a folder with ID/segments.parquet as written by `pipeline graph export` for each
               track (scripts/kubicka.sh leaves them in $KUBICKA_WORK/stepN/ID/): one directed
               segment per Kubicka arc, osm_way_id = arc id, from/to node, WKT lon/lat geometry.
               FMM gets exactly these edges, projected to local metres (equirectangular about
               the track's first fix; the tracks span at most 75 km).
OUT_DIR        gets ID.txt (matched way ids in driving order, consecutive repeats collapsed) for
               score_kubicka.py, and ID.stats (probes, match seconds, sub-trajectories).
STEP_S         keep every STEP_S-th 1 Hz fix.
--gps-error    one value, or several separated by commas to compare them with one UBODT load:
               then each value's outputs go to OUT_DIR/gpsM/.

Settings (chosen to be fair to FMM and like ours): k = 8 candidates, search radius r = 50 m,
gps_error 50 m (tried 10/20/30/50 m at 1 s, 30/50/75 m at 5 s, 10/20/30/50/75 m at 30 s:
50 m was best at 1 s and 5 s, and at 30 s within 0.004 RMF of the best, 20 m; see --gps-error), reverse tolerance 20 m (without it, GPS jitter while standing still makes fake
loops), SHORTEST mode, UBODT delta 1 km at every step (--delta overrides). The delta bounds
the network distance between two consecutive candidates; a longer transition makes FMM split
the trajectory (the split-off parts are still matched and counted, the route between them is
lost), which at 15 s and 30 s (up to ~1.5 km between fixes, 3 km on one track) costs recall
on the fast tracks (at 30 s: 00000001 and 00000022 lose over half their route). Bigger deltas did not
fit the time: at 3 km one 166 k-edge track gave 200 M UBODT rows (7.7 GB), and at 2 km the
same track took 5 min to build (3.8 GB) and minutes to load, for each of the larger tracks.

Timing: only the `match` calls are timed (time.perf_counter around each call); network build,
UBODT build/load and output writing are not. fastmm runs single-threaded in `match`; the
UBODT build may use OpenMP, so run with OMP_NUM_THREADS=1 on a shared machine.

Needs: Python 3.11 with fastmm==0.3.2 and pyarrow (scripts/peers/run_peers.sh installs them
into ~/.cache/pipeline-venv). UBODT files are cached under --cache (default
/tmp/fastmm_ubodt), one per track and delta; delete that folder when done (it reaches GBs).
"""
import argparse
import csv
import math
import os
import time

import fastmm
import pyarrow.parquet as pq

K, RADIUS_M, REVERSE_TOLERANCE_M = 8, 50.0, 20.0
DEFAULT_GPS_ERROR_M = 50.0
R_EARTH = 6371008.8


def default_delta(step):
    return 1000.0


def projector(lat0, lon0):
    ky = math.radians(1) * R_EARTH
    kx = ky * math.cos(math.radians(lat0))
    return lambda lon, lat: ((lon - lon0) * kx, (lat - lat0) * ky)


def parse_wkt(wkt):
    body = wkt[wkt.index("(") + 1 : wkt.rindex(")")]
    return [tuple(map(float, p.split())) for p in body.split(",")]


def read_probes(path, step):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [(float(r["lat"]), float(r["lon"]), int(r["ts_ms"])) for r in rows[::step]]


def build_network(seg_path, proj):
    segs = pq.read_table(seg_path, columns=["osm_way_id", "from_node_id", "to_node_id", "geometry"]).to_pydict()
    net = fastmm.Network()
    for way, a, b, wkt in zip(segs["osm_way_id"], segs["from_node_id"], segs["to_node_id"], segs["geometry"]):
        net.add_edge(int(way), source=int(a), target=int(b), geom=[proj(lon, lat) for lon, lat in parse_wkt(wkt)])
    net.finalize()
    return net


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("seg_root")
    ap.add_argument("out_dir")
    ap.add_argument("step", type=int)
    ap.add_argument("--delta", type=float, default=None, help="UBODT delta in metres")
    ap.add_argument("--gps-error", default=str(DEFAULT_GPS_ERROR_M))
    ap.add_argument("--tracks", default=None, help="comma-separated track ids (default: all)")
    ap.add_argument("--cache", default="/tmp/fastmm_ubodt")
    a = ap.parse_args()
    delta = a.delta if a.delta is not None else default_delta(a.step)
    gps_errors = [float(g) for g in a.gps_error.split(",")]
    out_dirs = {g: a.out_dir if len(gps_errors) == 1 else os.path.join(a.out_dir, f"gps{g:g}") for g in gps_errors}
    for d in out_dirs.values():
        os.makedirs(d, exist_ok=True)
    tracks = a.tracks.split(",") if a.tracks else sorted(
        t for t in os.listdir(a.root) if os.path.isdir(os.path.join(a.root, t)))
    total_probes, total_s = 0, {g: 0.0 for g in gps_errors}
    for track in tracks:
        probes = read_probes(os.path.join(a.root, track, "probes.csv"), a.step)
        proj = projector(probes[0][0], probes[0][1])
        t0 = time.perf_counter()
        net = build_network(os.path.join(a.seg_root, track, "segments.parquet"), proj)
        matcher = fastmm.FastMapMatch(
            net, fastmm.TransitionMode.SHORTEST,
            max_distance_between_candidates=delta,
            cache_dir=os.path.join(a.cache, f"{track}_d{int(delta)}"),
        )
        prep_s = time.perf_counter() - t0
        traj = fastmm.Trajectory.from_xyt_tuples(
            [(*proj(lon, lat), ts / 1000.0) for lat, lon, ts in probes])
        total_probes += len(probes)
        for g in gps_errors:
            started = time.perf_counter()
            result = matcher.match(traj, max_candidates=K, candidate_search_radius=RADIUS_M,
                                   gps_error=g, reverse_tolerance=REVERSE_TOLERANCE_M)
            match_s = time.perf_counter() - started
            total_s[g] += match_s
            # Only successfully matched sub-trajectories are returned; the probes outside
            # them (no candidate within r, or no path within the delta) are unmatched.
            path, n_subs, pts_ok = [], 0, 0
            for sub in result.subtrajectories:
                if sub.error_code != fastmm.MatchErrorCode.SUCCESS:
                    continue
                n_subs += 1
                pts_ok += sub.end_index - sub.start_index + 1
                for segment in sub.segments:
                    for edge in segment.edges:
                        if not path or path[-1] != edge.edge_id:
                            path.append(edge.edge_id)
            with open(os.path.join(out_dirs[g], f"{track}.txt"), "w") as f:
                f.write("".join(f"{w}\n" for w in path))
            stats = (f"{track} gps_error={g:g} probes={len(probes)} match_s={match_s:.4f} prep_s={prep_s:.1f} "
                     f"subtrajectories={n_subs} probes_unmatched={len(probes) - pts_ok} ways={len(path)}")
            with open(os.path.join(out_dirs[g], f"{track}.stats"), "w") as f:
                f.write(stats + "\n")
            print(stats, flush=True)
        del matcher, net
    for g in gps_errors:
        print(f"fastmm step {a.step}s delta {delta:.0f} m gps_error {g:g} m: {total_probes} probes "
              f"in {total_s[g]:.3f} s of match calls ({total_probes / max(total_s[g], 1e-9):.0f} probes/s, one thread)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Peer map matcher OSRM (PyPI `osrm-bindings`: libosrm's match service through its Python
bindings, MLD) on the 30 Kubicka tracks, for an accuracy and speed comparison with `pipeline`
(scripts/kubicka.sh) and FMM (fastmm_kubicka.py), scored by the same scorer
(../shared/scripts/score_kubicka.py --many ROOT --outputs OUT_DIR).

usage: osrm_kubicka.py KUBICKA_ROOT OUT_DIR STEP_S [--radius M] [--no-tidy]
           [--tracks ID,ID,...] [--data DIR]

KUBICKA_ROOT   ../shared/data/kubicka (ID/map.osm.pbf, ID/probes.csv, ID/ways.tsv.gz)
OUT_DIR        gets ID.txt (matched way ids in driving order, consecutive repeats collapsed) for
               score_kubicka.py, and ID.stats (probes, match seconds, matchings, matched points).
STEP_S         keep every STEP_S-th 1 Hz fix.

Graph: each track's map.osm.pbf goes through the package's own osrm-extract with its own
car.lua, then osrm-partition and osrm-customize (MLD), one thread each, into --data
(default /tmp/osrm_kubicka/ID/; reused when present; about 4x the pbf size, delete it when
done). The pbf ways are tagged highway=unclassified and oneway=yes, one way per directed
arc, which car.lua accepts as they are: on 00000000 it made 18 190 directed edges of the
18 196 ways (not twice as many, so oneway holds), and no node pair in any answer was missing
from ways.tsv.gz (counted as unknown_pairs in ID.stats).

Match call: coordinates, integer timestamps (s), radius --radius m (default 15) for every
point, tidy on (default; --no-tidy turns it off), gaps split (OSRM default), annotations
'nodes', no geometry. The route is read back from the legs' node annotations (OSM node ids =
Kubicka node index + 1): each consecutive node pair is one directed arc, mapped to its way id
through ways.tsv.gz (from_node, to_node); among parallel arcs the shortest is taken (the
scorer's 'canon' figure treats parallel arcs as one anyway). Sub-matchings are concatenated
in order. A track whose match call fails (e.g. NoMatch) gets an empty ID.txt and counts as
fully missed in the scores.

Timing: only the OSRM.Match calls are timed (time.perf_counter around each call); building
the parameters and reading the result are not. libosrm answers one request on the calling
thread.

Needs: Python 3.12 with osrm-bindings and pyarrow (scripts/peers/run_peers.sh installs them
into ~/.cache/pipeline-osrm-venv); the package ships osrm-extract/partition/customize and
car.lua under osrm/bin and osrm/share/profiles.
"""
import argparse
import csv
import gzip
import os
import subprocess
import time

import osrm

PKG = os.path.dirname(osrm.__file__)
BIN = os.path.join(PKG, "bin")
CAR_LUA = os.path.join(PKG, "share", "profiles", "car.lua")


def prepare(pbf, work):
    """extract + partition + customize once per track; returns the .osrm base path."""
    base = os.path.join(work, "map.osrm")
    if os.path.exists(base + ".mldgr") and os.path.exists(base + ".cell_metrics"):
        return base
    os.makedirs(work, exist_ok=True)
    link = os.path.join(work, "map.osm.pbf")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(pbf), link)
    log = open(os.path.join(work, "prepare.log"), "w")
    for cmd in (
        [os.path.join(BIN, "osrm-extract"), "-p", CAR_LUA, "-t", "1", link],
        [os.path.join(BIN, "osrm-partition"), "-t", "1", base],
        [os.path.join(BIN, "osrm-customize"), "-t", "1", base],
    ):
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    return base


def read_arcs(path):
    """(from_node, to_node) -> way id, the shortest of parallel arcs."""
    best = {}
    with gzip.open(path, "rt") as f:
        next(f)
        for line in f:
            w, a, b, length = line.split("\t")
            key, cand = (int(a), int(b)), (float(length), int(w))
            if key not in best or cand < best[key]:
                best[key] = cand
    return {k: v[1] for k, v in best.items()}


def read_probes(path, step):
    with open(path) as f:
        rows = list(csv.DictReader(f))[::step]
    return [(float(r["lon"]), float(r["lat"])) for r in rows], [int(r["ts_ms"]) // 1000 for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("out_dir")
    ap.add_argument("step", type=int)
    ap.add_argument("--radius", type=float, default=15.0)
    ap.add_argument("--no-tidy", action="store_true")
    ap.add_argument("--tracks", default=None, help="comma-separated track ids (default: all)")
    ap.add_argument("--data", default="/tmp/osrm_kubicka")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    tracks = a.tracks.split(",") if a.tracks else sorted(
        t for t in os.listdir(a.root) if os.path.isdir(os.path.join(a.root, t)))
    total_probes, total_s, failed = 0, 0.0, []
    for track in tracks:
        tdir = os.path.join(a.root, track)
        base = prepare(os.path.join(tdir, "map.osm.pbf"), os.path.join(a.data, track))
        arcs = read_arcs(os.path.join(tdir, "ways.tsv.gz"))
        engine = osrm.OSRM(storage_config=base, algorithm="MLD", use_shared_memory=False)
        coords, ts = read_probes(os.path.join(tdir, "probes.csv"), a.step)
        params = osrm.MatchParameters(
            coordinates=coords, timestamps=ts, radiuses=[a.radius] * len(coords),
            tidy=not a.no_tidy, annotations=["nodes"], overview="false")
        error = None
        started = time.perf_counter()
        try:
            result = engine.Match(params)
        except RuntimeError as e:  # NoMatch, NoSegment, ... : the whole track is unmatched
            result, error = None, str(e).replace("\n", " ")[:200]
        match_s = time.perf_counter() - started
        total_s += match_s
        total_probes += len(coords)
        path, n_matchings, n_points, unknown_pairs = [], 0, 0, 0
        if result is not None:
            n_points = sum(1 for tp in result["tracepoints"] if tp is not None)
            for matching in result["matchings"]:
                n_matchings += 1
                for leg in matching["legs"]:
                    nodes = [int(n) for n in leg["annotation"]["nodes"]]
                    for pair in zip(nodes, nodes[1:]):
                        way = arcs.get(pair)
                        if way is None:
                            unknown_pairs += 1
                        elif not path or path[-1] != way:
                            path.append(way)
        if error is not None or n_matchings == 0:
            failed.append(track)
        with open(os.path.join(a.out_dir, f"{track}.txt"), "w") as f:
            f.write("".join(f"{w}\n" for w in path))
        stats = (f"{track} probes={len(coords)} match_s={match_s:.4f} matchings={n_matchings} "
                 f"matched_points={n_points} unknown_pairs={unknown_pairs} ways={len(path)}"
                 + (f" error={error}" if error else ""))
        with open(os.path.join(a.out_dir, f"{track}.stats"), "w") as f:
            f.write(stats + "\n")
        print(stats, flush=True)
    print(f"osrm step {a.step}s radius {a.radius:g} m tidy {not a.no_tidy}: {total_probes} probes in "
          f"{total_s:.3f} s of match calls ({total_probes / max(total_s, 1e-9):.0f} probes/s, one thread); "
          f"failed tracks: {len(failed)} {' '.join(failed)}")


if __name__ == "__main__":
    main()

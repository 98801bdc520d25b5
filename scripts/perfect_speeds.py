#!/usr/bin/env python3
"""The perfect estimator's speeds for a SUMO scenario, as a speeds Parquet file that
score_speeds.py reads: per (our segment, 60 s window) the mean of the true 1 Hz speeds
(space mean: distance over time) of the vehicles whose front is on a SUMO edge associated with
the segment, by score_speeds.py's own association (forward and reverse), which this imports.
numpy + pyarrow only.

usage: perfect_speeds.py SCORE_SPEEDS.py SCENARIO_DIR SEGMENTS.parquet OUT.parquet
"""
import importlib.util
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

WINDOW_MS = 60_000


def main():
    scorer, scenario, segments, out = sys.argv[1:5]
    spec = importlib.util.spec_from_file_location('score_speeds', scorer)
    ss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ss)
    seg = pq.read_table(segments, columns=['segment_id', 'osm_way_id', 'geometry'])
    sumo = pq.read_table(f'{scenario}/sumo_edges.parquet')
    (f_idx, _, _, _), r_idx = ss.map_segments(seg, sumo, 30.0, 60.0)
    s_ids = sumo['sumo_edge'].to_pylist()
    keys = seg['segment_id'].to_pylist()
    pairs = {(i, int(k)) for i, k in enumerate(f_idx) if k >= 0}
    pairs |= {(int(i), k) for k, i in enumerate(r_idx) if i >= 0}
    pairs = sorted(pairs)
    m = pa.table({'segment_id': pa.array([keys[i] for i, _ in pairs], pa.uint64()),
                  'sumo_edge': pa.array([s_ids[k] for _, k in pairs], pa.string())})
    tr = pq.read_table(f'{scenario}/truth_points.parquet', columns=['ts_ms', 'sumo_edge', 'speed_mps'])
    win = pc.multiply(pc.divide(tr['ts_ms'], pa.scalar(WINDOW_MS, pa.int64())), pa.scalar(WINDOW_MS, pa.int64()))
    tr = pa.table({'sumo_edge': tr['sumo_edge'], 'window_start_ms': win, 'speed_mps': tr['speed_mps']})
    per_edge = tr.group_by(['sumo_edge', 'window_start_ms']).aggregate([('speed_mps', 'sum'), ('speed_mps', 'count')])
    per_seg = m.join(per_edge, 'sumo_edge', join_type='inner').group_by(['segment_id', 'window_start_ms']).aggregate(
        [('speed_mps_sum', 'sum'), ('speed_mps_count', 'sum')])
    joined = per_seg.append_column('speed_mps_mean', pc.divide(
        pc.cast(per_seg['speed_mps_sum_sum'], pa.float64()), pc.cast(per_seg['speed_mps_count_sum'], pa.float64())))
    joined = joined.rename_columns([c.replace('speed_mps_count_sum', 'speed_mps_count') for c in joined.column_names])
    speed = joined['speed_mps_mean'].to_numpy(zero_copy_only=False)
    keep = np.isfinite(speed) & (speed > 0)
    joined = joined.filter(pa.array(keep))
    t = pa.table({
        'segment_id': joined['segment_id'],
        'window_start_ms': joined['window_start_ms'],
        'window_end_ms': pc.add(joined['window_start_ms'], pa.scalar(WINDOW_MS, pa.int64())),
        'estimator': pa.array(['perfect'] * joined.num_rows),
        'samples': pc.cast(joined['speed_mps_count'], pa.int64()),
        'speed_mps': pc.cast(joined['speed_mps_mean'], pa.float64()),
    })
    pq.write_table(t, out)


if __name__ == '__main__':
    main()

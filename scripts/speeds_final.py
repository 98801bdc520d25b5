#!/usr/bin/env python3
"""A replay's speeds as a consumer sees them: the last revision of each (segment, window,
estimator). With `drop`, instead: the observations without PARTIAL_START (the first of each
trace), aggregated into 60 s space means here (a copy of the aggregate's space mean, for an
aggregate that does not count PARTIAL_START yet).

usage: speeds_final.py RUN_DIR [keep|drop]   (writes RUN_DIR/speeds_final.parquet)
"""
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

WINDOW_MS = 60_000


def last_revisions(run):
    t = pq.read_table(f'{run}/speeds.parquet')
    t = t.sort_by([('segment_id', 'ascending'), ('window_start_ms', 'ascending'),
                   ('estimator', 'ascending'), ('revision', 'descending')])
    keys = list(zip(t['segment_id'].to_pylist(), t['window_start_ms'].to_pylist(), t['estimator'].to_pylist()))
    keep = [i for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    return t.take(keep)


def without_partial_start(run):
    o = pq.read_table(f'{run}/observations.parquet',
                      columns=['segment_id', 'enter_ts_ms', 'exit_ts_ms', 'traversed_m', 'speed_mps', 'flags'])
    enter = o['enter_ts_ms'].to_numpy(); exit_ = o['exit_ts_ms'].to_numpy()
    ok = ((o['flags'].to_numpy() & 1) == 0) & (exit_ > enter) & (o['speed_mps'].to_numpy() <= 70.0)
    o = o.filter(pa.array(ok))
    enter = o['enter_ts_ms'].to_numpy(); exit_ = o['exit_ts_ms'].to_numpy()
    mid = enter + (exit_ - enter) // 2
    t = pa.table({'segment_id': o['segment_id'], 'window_start_ms': (mid // WINDOW_MS) * WINDOW_MS,
                  'd': o['traversed_m'], 'ms': (exit_ - enter).astype(np.float64)})
    g = t.group_by(['segment_id', 'window_start_ms']).aggregate([('d', 'sum'), ('ms', 'sum'), ('d', 'count')])
    speed = pc.divide(g['d_sum'], pc.divide(g['ms_sum'], 1000.0))
    out = pa.table({'segment_id': g['segment_id'], 'window_start_ms': g['window_start_ms'],
                    'window_end_ms': pc.add(g['window_start_ms'], WINDOW_MS),
                    'estimator': pa.array(['space_mean'] * g.num_rows), 'samples': g['d_count'],
                    'speed_mps': speed})
    return out.filter(pc.greater(out['speed_mps'], 0.0))


def main():
    run = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else 'keep'
    t = without_partial_start(run) if mode == 'drop' else last_revisions(run)
    pq.write_table(t, f'{run}/speeds_final.parquet')


if __name__ == '__main__':
    main()

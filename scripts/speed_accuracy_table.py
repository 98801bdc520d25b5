#!/usr/bin/env python3
"""Prints the Markdown table of scripts/speed_accuracy.sh from the scorer's JSON reports.

usage: speed_accuracy_table.py WORK SCENARIO... -- INTERVAL_S...
"""
import glob
import json
import os
import sys

BANDS = ['0-2', '2-5', '5-10', '10-20', '>=20']


def row(label, rep):
    m, c, b = rep['metrics'], rep['coverage'], rep['by_truth_speed_mps']
    cells = [label, f"{m['MAPE']:.4f}", f"{m['bias']:+.2f}", f"{c['coverage']:.3f}"]
    for band in BANDS:
        x = b.get(band)
        cells.append(f"{100 * x['MAPE']:.1f} % / {x['bias']:+.2f}" if x and x.get('pairs') else '–')
    return '| ' + ' | '.join(cells) + ' |'


def main():
    args = sys.argv[1:]
    work, rest = args[0], args[1:]
    cut = rest.index('--')
    scenarios, intervals = rest[:cut], rest[cut + 1:]
    head = ('| run | MAPE | bias (m/s) | coverage | ' + ' | '.join(f'{b} m/s MAPE / bias' for b in BANDS) + ' |')
    for sc in scenarios:
        d = os.path.join(work, sc)
        if not os.path.isdir(d):
            continue
        print(f'\n{sc}\n')
        print(head)
        print('|' + '---|' * (4 + len(BANDS)))
        with open(os.path.join(d, 'perfect.json')) as f:
            print(row('perfect', json.load(f)))
        for n in intervals:
            for path in sorted(glob.glob(os.path.join(d, f'{n}s', '*.json'))):
                est = os.path.basename(path)[:-5]
                with open(path) as f:
                    print(row(f'{n} s {est}', json.load(f)))


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write the README's performance figures from the benchmarks' JSON.

Each benchmark prints one JSON object on stdout; keep it in
benchmarks/results/, then let this script write the figure blocks of
README.md (each between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`):

    python benchmarks/sync.py > benchmarks/results/sync-sqlite.json
    python benchmarks/sync.py --db postgresql \\
        > benchmarks/results/sync-postgresql.json
    python benchmarks/upload.py > benchmarks/results/upload-50.json
    python benchmarks/viewer_access.py > benchmarks/results/viewer_access.json
    python benchmarks/worklist.py   # writes benchmarks/results/worklist.json
    python benchmarks/readme.py           # rewrite the blocks
    python benchmarks/readme.py --check   # exit 1 if README.md differs

A block whose results are missing says so instead of showing figures.
"""
import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
RESULTS = os.path.join(HERE, 'results')
README = os.path.join(os.path.dirname(HERE), 'README.md')
BLOCK = re.compile(r'(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)'
    r'(<!-- /bench:(?P=name) -->)', re.S)
SYNC_MEASURES = [
    ('rest_floor', 'REST floor (fewest calls)'),
    ('rest_per_study', 'REST per study (2 calls a study)'),
    ('orm_floor', 'ORM floor (one create per model)'),
    ('write_floor', 'write floor (batched SQL)'),
    ('first_incremental', 'first incremental sync'),
    ('noop_incremental', 'no-op incremental sync'),
    ('full_empty', 'full sync, empty database'),
    ('full_nochange', 'full sync, nothing to change'),
    ('rest_series_floor', 'REST floor, studies and series only'),
    ('first_on_demand', 'first sync, instances on demand'),
    ('open_series', 'opening one series (on demand)'),
    ]
GROUP_LABELS = {'scale': 'growth to the --scale size',
    'archive': 'archive growth, 20,000 against 2,000 studies'}
DATABASES = {'sqlite': 'SQLite', 'postgresql': 'PostgreSQL'}


def results(pattern):
    "[(file name, JSON)] of the results files matching pattern, sorted."
    found = []
    for path in sorted(glob.glob(os.path.join(RESULTS, pattern))):
        with open(path) as stream:
            found.append((os.path.basename(path), json.load(stream)))
    return found


def table(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |',
        '|' + ' --- |' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return lines


def number(value, digits=2):
    text = '%.*f' % (digits, value)
    # Trailing zeros of the decimals only (110 MB stays 110).
    return text.rstrip('0').rstrip('.') if '.' in text else text


def targets_line(name, targets):
    "One line: every target of a run, met or MISSED."
    parts = []
    for key, value in targets.items():
        if isinstance(value, dict):
            shown = value['value']
            if isinstance(shown, (int, float)):
                shown = number(shown, 3)
            parts.append('%s %s (limit %s)%s' % (key, shown,
                    value['limit'], '' if value['ok']
                    else ' **MISSED**'))
        else:
            parts.append('%s %s' % (key, 'yes' if value else '**no**'))
    return '- %s: %s.' % (name, '; '.join(parts))


def render_sync():
    runs = []
    for file_name, report in results('sync-*.json'):
        for size, run in report['runs'].items():
            runs.append(('%s %s' % (DATABASES.get(report['db'],
                            report['db']), size), file_name, run))
    if not runs:
        return ['No results in benchmarks/results/sync-*.json yet.']
    rows = []
    for key, label in SYNC_MEASURES:
        row = [label]
        for _, _, run in runs:
            values = run.get(key)
            if not values:
                row.append('-')
                continue
            cell = '%s s / %d req / %s MB' % (number(values['seconds'], 3),
                values['requests'], number(values['peak_rss_mb'], 0))
            if 'wrote_nothing' in values:
                cell += ', wrote nothing' if values['wrote_nothing'] else (
                    ', **wrote**')
            row.append(cell)
        rows.append(row)
    lines = table(['measurement'] + [r[0] for r in runs], rows)
    lines.append('')
    lines.append('Targets (value, limit):')
    lines.append('')
    for name, file_name, run in runs:
        lines.append(targets_line('%s (`%s`)' % (name, file_name),
                run['targets']))
    for file_name, report in results('sync-*.json'):
        for group, label in GROUP_LABELS.items():
            if group in report:
                lines.append(targets_line('%s %s (`%s`)' % (
                            DATABASES.get(report['db'], report['db']),
                            label, file_name), group_targets(report[group])))
    return lines


ROUTE_SCENARIOS = [
    ('floor', 'floor: straight to Orthanc'),
    ('floor_parallel', 'floor: straight to Orthanc, as many at once as '
        'the route'),
    ('floor_sockets', 'floor: the same on plain sockets (no httpx)'),
    ('route', 'route, as SAO sends it'),
    ('route_reconcile', 'route with reconciliation'),
    ('rpc', 'JSON-RPC (rpc)'),
    ]


def render_route(file_name, report):
    "The streaming route's run (benchmarks/upload.py --issue14)."
    floor = min(report[key]['seconds'] for key, _ in ROUTE_SCENARIOS
        if key.startswith('floor') and key in report)
    header = ['%s MB, %d files (`%s`)' % (number(report['payload_mb'], 1),
            report['files'], file_name), 'time', '/ faster floor',
        'trytond peak RSS growth']
    rows = []
    for key, label in ROUTE_SCENARIOS:
        values = report.get(key)
        if not values:
            continue
        if key == 'rpc':
            label += ', %s MB' % number(report.get('rpc_payload_mb',
                    report['payload_mb']), 1)
        elif 'post_seconds' in values:
            label += ' (posts %s s + wizard %s s)' % (
                number(values['post_seconds'], 1),
                number(values['wizard_seconds'], 1))
        if len(values.get('runs_seconds') or ()) > 1:
            label += '; median of %s s' % ', '.join(
                number(t, 1) for t in values['runs_seconds'])
        rows.append([label, '%s s' % number(values['seconds'], 1),
                number(values['seconds'] / floor) if key != 'rpc' else '-',
                '-' if key.startswith('floor') else '%s MB' % number(
                    values['upload_memory_mb'], 1)])
    lines = table(header, rows)
    if report.get('loadavg'):
        lines += ['', 'Load average during the run: %s.'
            % report['loadavg']]
    figures = report.get('figures') or {}
    for suffix, text in [
            ('_post_vs_floor', 'Posting alone (without the wizard) ÷ the '
                'fastest floor'),
            ('_fastest_vs_fastest_floor', 'Fastest run ÷ fastest floor '
                'run (the noise only adds time)')]:
        found = [(key[:-len(suffix)], value)
            for key, value in figures.items() if key.endswith(suffix)]
        if found:
            lines += ['', '%s: %s.' % (text, '; '.join('%s %s' % (
                                name, number(value))
                        for name, value in found))]
    return lines + ['', targets_line('`%s`' % file_name,
            report['targets'])]


def group_targets(group):
    "The targets of a growth group (scale, archive) by 'sync/target'."
    return {'%s/%s' % (name, key): value
        for name, values in group.items()
        if name in ('first_incremental', 'full_empty')
        for key, value in values.items()}


def render_upload():
    found = results('upload-*.json')
    if not found:
        return ['No results in benchmarks/results/upload-*.json yet.']
    rows = []
    routes = [(f, r) for f, r in found if 'route' in r]
    found = [(f, r) for f, r in found if 'route' not in r]
    if not found:
        lines = []
        for file_name, report in routes:
            lines += render_route(file_name, report) + ['']
        return lines[:-1]
    for file_name, report in found:
        wizard, rpc = report['wizard'], report.get('rpc')
        rows.append([
            '%s MB, %d files (`%s`)' % (number(report['payload_mb'], 1),
                report['files'], file_name),
            '%s s' % number(report['floor']['seconds']),
            '%s s' % number(wizard['seconds']),
            number(wizard['seconds'] / report['floor']['seconds']),
            '%s MB (%s MB)' % (number(wizard['peak_rss_mb'], 0),
                number(wizard['upload_memory_mb'], 0)),
            number(wizard['upload_memory_mb'] / report['payload_mib']),
            '%s s, %s MB (%s MB)' % (number(rpc['seconds']),
                number(rpc['peak_rss_mb'], 0),
                number(rpc['upload_memory_mb'], 0)) if rpc else '-',
            ])
    lines = table(['payload', 'floor', 'wizard', 'wizard / floor',
            'wizard peak RSS (own)', 'own / payload',
            'JSON-RPC to trytond: time, peak RSS (own)'], rows)
    lines.append('')
    for file_name, report in found:
        lines.append(targets_line('`%s`' % file_name, report['targets']))
    for file_name, report in routes:
        lines += [''] + render_route(file_name, report)
    return lines


def render_viewer():
    found = results('viewer_access*.json')
    if not found:
        return ['No results in benchmarks/results/viewer_access*.json yet.']
    lines = []
    labels = {
        'basic': 'Basic auth (service account, through the script)',
        'token': 'token cookie',
        'plain': 'Orthanc without the script, built-in Basic auth '
        '(reference)',
        }
    for file_name, report in found:
        lines += table(['path (`%s`: %d previews x %d rounds)' % (
                    file_name, report['previews'], report['rounds']),
                'previews/s'],
            [[labels.get(k, k), number(v, 0)]
                for k, v in report['previews_per_second'].items()])
        lines.append('')
        lines.append(targets_line('`%s`' % file_name, report['targets']))
    return lines


def render_worklist():
    found = results('worklist*.json')
    if not found:
        return ['No results in benchmarks/results/worklist*.json yet.']
    lines = []
    for file_name, report in found:
        find, empty = report['find_s'], report['find_empty_s']
        answers = report['find_answers']
        load = report['load_average']
        lines += table(['`%s`: %d pending items' % (file_name,
                    report['pending']), 'Orthanc-side script',
                'ModalityWorklists folder'], [
                ['C-FIND, one date and one modality (median of 5)',
                    '%s s (%s answers)' % (number(find['script'], 3),
                        '/'.join(map(str, answers['script']))),
                    '%s s (%s answers)' % (number(find['folder'], 3),
                        '/'.join(map(str, answers['folder'])))],
                ['C-FIND, empty worklist (findscu, association)',
                    '%s s' % number(empty['script'], 3),
                    '%s s' % number(empty['folder'], 3)],
                ['%d pending items: made, then delivered' % report[
                        'pending'],
                    '%s s + %s s' % (number(report['pending_items_made_s']),
                        number(report['pending_delivered_script_s'])),
                    '%s s written' % number(
                        report['pending_written_folder_s'])],
                ])
        lines.append('')
        lines.append('%d new items: made %s s (GNU Health\'s own create of '
            'the same requests, without items: %s s), delivered %s s. Load '
            'average %s before, %s after.' % (report['new'],
                number(report['new_items_made_s']),
                number(report['new_requests_without_items_s']),
                number(report['new_items_sent_s']),
                number(load['before'][0], 1), number(load['after'][0], 1)))
        lines.append('')
        lines.append(targets_line('`%s`' % file_name, report['targets']))
    return lines


RENDER = {'sync': render_sync, 'upload': render_upload,
    'viewer': render_viewer, 'worklist': render_worklist}


def rewrite(text):
    "README text with every known block written from the results."
    def block(match):
        render = RENDER.get(match.group('name'))
        if render is None:
            return match.group(0)
        return match.group(1) + '\n'.join(render()) + '\n' + match.group(4)
    return BLOCK.sub(block, text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
        help='only say whether README.md shows what the results say')
    args = parser.parse_args()
    with open(README, encoding='utf-8') as stream:
        text = stream.read()
    new = rewrite(text)
    if args.check:
        if new != text:
            print('README.md figures differ from benchmarks/results: run '
                'python benchmarks/readme.py', file=sys.stderr)
            return 1
        return 0
    if new != text:
        with open(README, 'w', encoding='utf-8') as stream:
            stream.write(new)
    return 0


if __name__ == '__main__':
    sys.exit(main())

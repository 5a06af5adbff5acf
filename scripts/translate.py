#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""The module's translations, locale/<lang>.po (run with .venv/bin/python).

  scripts/translate.py [LANG ...]
      Activate health_orthanc in a throwaway SQLite database (the test
      suite's cached one when its sources match), let Tryton extract every
      string (Set Translations, Update Translations, then the export
      wizard's logic) and write locale/LANG.po for each LANG (default: the
      languages whose locale/LANG.po exists; name a language to start
      its catalogue): translations kept, new strings empty, a
      reworded string keeps its old translation marked fuzzy, vanished
      strings dropped.
  scripts/translate.py --missing LANG [> todo.json]
      Print the untranslated and fuzzy entries of locale/LANG.po as JSON:
      a source already translated elsewhere in the catalogue comes with
      that translation ("prefilled"), others with a "suggestion" from
      trytond's and GNU Health's catalogues when one exists. Run the
      export first so that new strings are in.
  scripts/translate.py --apply LANG todo.json
      Write the translations of todo.json into locale/LANG.po: the
      --missing list with each "translation" filled, or a mapping
      {"source text": "translation"} for every entry with that source.
      Placeholders such as %(name)s must be kept exactly.
"""
import os
import sys

# This file is named like the standard library's locale module, which
# argparse imports: its own folder must not shadow it.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402

ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, 'build')
sys.path.append(os.path.join(ROOT, 'tests'))


def throwaway_database():
    "Environment of the suite's SQLite phase, before trytond is imported."
    os.environ['TRYTOND_DATABASE_URI'] = 'sqlite://'
    os.environ['DB_NAME'] = ':memory:'
    os.environ['DB_CACHE'] = os.path.join(BUILD, 'db-cache')
    os.makedirs(BUILD, exist_ok=True)
    import run_suite
    # The cache is keyed by module name only: drop it when sources changed.
    run_suite.invalidate_sqlite_cache()


def export(languages):
    throwaway_database()
    from trytond.tests.test_tryton import DB_NAME, activate_module
    # trytond's SQLite backend warns about every constraint it skips.
    warnings.simplefilter('ignore')
    from trytond.transaction import Transaction
    import translations
    activate_module(translations.MODULE)
    counts = {}
    with Transaction().start(DB_NAME, 0) as transaction:
        for lang in languages:
            template = translations.export_catalogue(lang)
            merged = translations.merge(template, translations.load(lang),
                lang)
            translations.save(merged, lang)
            counts[lang] = (len(merged),
                len(translations.untranslated(merged)))
        transaction.rollback()
    for lang, (total, todo) in counts.items():
        print('%s: %d entries, %d untranslated or fuzzy -> %s'
            % (lang, total, todo, translations.po_path(lang)))


def missing(lang):
    import translations
    catalogue = translations.load(lang)
    items = translations.missing_json(catalogue,
        translations.suggestions(lang))
    json.dump(items, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write('\n')
    prefilled = sum(1 for item in items if item.get('prefilled'))
    print('%s: %d to translate, %d prefilled from the same source elsewhere '
        'in the catalogue (review them)' % (lang, len(items), prefilled),
        file=sys.stderr)


def apply(lang, path):
    import translations
    with open(path, encoding='utf-8') as fp:
        items = json.load(fp)
    catalogue = translations.load(lang)
    filled, problems = translations.apply(catalogue, items)
    translations.save(catalogue, lang)
    for problem in problems:
        print(problem, file=sys.stderr)
    left = len(translations.untranslated(catalogue))
    print('%s: %d filled, %d left, %d problems'
        % (lang, filled, left, len(problems)))
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('languages', nargs='*', metavar='LANG')
    parser.add_argument('--missing', metavar='LANG')
    parser.add_argument('--apply', nargs=2, metavar=('LANG', 'FILE'))
    args = parser.parse_args()
    if args.missing:
        return missing(args.missing)
    if args.apply:
        return apply(*args.apply)
    import translations
    export(args.languages or translations.existing_languages()
        or translations.LANGUAGES)
    return 0


if __name__ == '__main__':
    sys.exit(main())

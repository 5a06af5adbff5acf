# SPDX-License-Identifier: GPL-3.0-or-later
"""The module's translation catalogues (locale/<lang>.po) against what
Tryton's own translation machinery extracts from the activated module.

Used by scripts/translate.py (write, list, fill the catalogues) and by
tests/test_translations.py (nothing untranslated, nothing fuzzy)."""
import glob
import os
import re

import polib

MODULE = 'health_orthanc'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCALE = os.path.join(ROOT, 'locale')
# The languages the module ships; a catalogue is checked once its file
# exists.
LANGUAGES = ['es', 'fr', 'de', 'pt_BR']
# Languages trytond 7.0 does not define itself (it has "pt" only); a site
# serving them creates the language, as the tool and the test do.
EXTRA_LANGUAGES = {
    'pt_BR': ('Português (Brasil)', 'pt'),
    }
PLACEHOLDER = re.compile(r'%\(\w+\)[sdifr]|%[sdifr]')


def po_path(lang):
    return os.path.join(LOCALE, '%s.po' % lang)


def existing_languages():
    return [lang for lang in LANGUAGES if os.path.exists(po_path(lang))]


def ensure_language(code):
    "The ir.lang of code, created for the languages trytond lacks."
    from trytond.pool import Pool
    Lang = Pool().get('ir.lang')
    langs = Lang.search([('code', '=', code)], limit=1)
    if langs:
        return langs[0]
    name, parent = EXTRA_LANGUAGES[code]
    lang, = Lang.create([{
                'name': name, 'code': code, 'parent': parent,
                'translatable': False,
                }])
    return lang


def export_catalogue(lang):
    """The catalogue Tryton exports for the module in lang, as a
    polib.POFile: the Set Translations wizard extracts view and report
    strings, Update Translations makes the entries of lang, and the
    export wizard's logic writes them. Runs in the current transaction
    (activated module); the caller rolls back."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool()
    Translation = pool.get('ir.translation')
    language = ensure_language(lang)
    View = pool.get('ir.ui.view')
    Report = pool.get('ir.action.report')
    SetWizard = pool.get('ir.translation.set', type='wizard')
    # Only the module's views and reports: extracting every module's
    # strings takes a minute and is not exported here.
    for Model, records in [
            (View, View.search([('module', '=', MODULE)])),
            (Report, Report.search([
                        ('module', '=', MODULE),
                        ('translatable', '=', True),
                        ]))]:
        if not records:
            continue
        ids = [r.id for r in records]
        with Transaction().set_context(active_model=Model.__name__,
                active_ids=ids, active_id=ids[0]):
            session_id, _, _ = SetWizard.create()
            SetWizard(session_id).transition_set_()
    UpdateWizard = pool.get('ir.translation.update', type='wizard')
    session_id, _, _ = UpdateWizard.create()
    update = UpdateWizard(session_id)
    update.start.language = language
    update.do_update({})
    content = Translation.translation_export(lang, MODULE)
    return polib.pofile(content.decode('utf-8') if content else '')


def key(entry):
    return (entry.msgctxt, entry.msgid)


def entry_type(entry):
    return entry.msgctxt.split(':', 1)[0]


def merge(template, existing, lang):
    """The catalogue to write: the entries of template (what the module
    has now) with the translations of existing kept; a string whose
    source text changed keeps its old translation marked fuzzy (for
    types with one string per context: fields, help, records); strings
    no longer in the module are dropped."""
    from trytond.ir.translation import TrytonPOFile
    old = {key(e): e for e in existing if not e.obsolete}
    # Contexts naming one string (field:, help:, model:...): a changed
    # source is the same string reworded.
    old_by_context = {}
    for entry in existing:
        if not entry.obsolete:
            old_by_context.setdefault(entry.msgctxt, []).append(entry)
    template_contexts = {}
    for entry in template:
        template_contexts.setdefault(entry.msgctxt, []).append(entry)
    result = TrytonPOFile(wrapwidth=78)
    result.metadata = {
        'Content-Type': 'text/plain; charset=utf-8',
        'Language': lang,
        }
    for entry in template:
        new = polib.POEntry(msgctxt=entry.msgctxt, msgid=entry.msgid,
            msgstr='')
        previous = old.get(key(entry))
        if previous is not None:
            new.msgstr = previous.msgstr
            new.flags = [f for f in previous.flags if f == 'fuzzy']
            new.previous_msgid = previous.previous_msgid
        else:
            candidates = old_by_context.get(entry.msgctxt, [])
            if (len(candidates) == 1
                    and len(template_contexts[entry.msgctxt]) == 1
                    and candidates[0].msgstr):
                new.msgstr = candidates[0].msgstr
                new.flags = ['fuzzy']
                new.previous_msgid = candidates[0].msgid
        if 'fuzzy' not in new.flags:
            new.previous_msgid = None
        result.append(new)
    result.sort()
    return result


def load(lang):
    "The catalogue of lang on disk (an empty one when there is none)."
    path = po_path(lang)
    if os.path.exists(path):
        return polib.pofile(path, wrapwidth=78)
    return polib.POFile(wrapwidth=78)


def save(catalogue, lang):
    os.makedirs(LOCALE, exist_ok=True)
    catalogue.wrapwidth = 78
    catalogue.save(po_path(lang))


def untranslated(catalogue):
    "Entries still to translate or to review (fuzzy)."
    return [e for e in catalogue
        if not e.obsolete and (not e.msgstr or 'fuzzy' in e.flags)]


def placeholder_errors(catalogue):
    """Translated entries whose %(name)s placeholders differ from the
    source: the message would fail or lose a value at run time."""
    errors = []
    for entry in catalogue:
        if entry.obsolete or not entry.msgstr:
            continue
        if (sorted(PLACEHOLDER.findall(entry.msgid))
                != sorted(PLACEHOLDER.findall(entry.msgstr))):
            errors.append(entry)
    return errors


def suggestions(lang):
    """Translations of the same source text in the catalogues of the
    modules health_orthanc builds on (trytond's and GNU Health's), as
    hints for the translator."""
    import trytond
    import trytond.modules
    found = {}
    paths = glob.glob(os.path.join(os.path.dirname(trytond.modules.__file__),
            '*', 'locale', '%s.po' % lang))
    paths += glob.glob(os.path.join(os.path.dirname(trytond.__file__),
            '*', 'locale', '%s.po' % lang))
    for path in sorted(paths):
        if os.path.realpath(path).startswith(LOCALE + os.sep):
            continue
        try:
            catalogue = polib.pofile(path)
        except (OSError, ValueError):  # a broken catalogue gives no hint
            continue
        for entry in catalogue:
            if entry.msgstr and 'fuzzy' not in entry.flags:
                found.setdefault(entry.msgid, entry.msgstr)
    return found


def missing_json(catalogue, hints=None):
    """The entries to translate as a list of dicts, the format --apply
    reads back once each has its "translation". A new string whose source
    is translated elsewhere in the catalogue comes with that translation
    ("prefilled": review it where the context changes the meaning)."""
    hints = hints or {}
    own = {e.msgid: e.msgstr for e in catalogue
        if not e.obsolete and e.msgstr and 'fuzzy' not in e.flags}
    items = []
    for entry in untranslated(catalogue):
        item = {
            'context': entry.msgctxt,
            'source': entry.msgid,
            'translation': entry.msgstr,
            'fuzzy': 'fuzzy' in entry.flags,
            }
        if entry.previous_msgid:
            item['previous_source'] = entry.previous_msgid
        if not entry.msgstr and entry.msgid in own:
            item['translation'] = own[entry.msgid]
            item['prefilled'] = True
        elif entry.msgid in hints and not entry.msgstr:
            item['suggestion'] = hints[entry.msgid]
        items.append(item)
    return items


def apply(catalogue, translations):
    """Fill catalogue from translations: a list of {"context", "source",
    "translation"} (the --missing format) fills the entry of that
    context and source; a mapping {source: translation} fills every
    untranslated or fuzzy entry with that source. A filled entry is no
    longer fuzzy. Returns (number filled, problems)."""
    problems = []
    by_key = {key(e): e for e in catalogue if not e.obsolete}
    pending = {key(e) for e in untranslated(catalogue)}
    if isinstance(translations, dict):
        items = [{'context': e.msgctxt, 'source': e.msgid,
                'translation': translations[e.msgid]}
            for e in untranslated(catalogue) if e.msgid in translations]
    else:
        items = translations
    filled = 0
    for item in items:
        text = item.get('translation') or ''
        if not text:
            continue
        entry = by_key.get((item['context'], item['source']))
        if entry is None:
            problems.append('not in the catalogue: %s %r'
                % (item['context'], item['source']))
            continue
        if (sorted(PLACEHOLDER.findall(entry.msgid))
                != sorted(PLACEHOLDER.findall(text))):
            problems.append('placeholders differ: %s %r -> %r'
                % (item['context'], item['source'], text))
            continue
        entry.msgstr = text
        if 'fuzzy' in entry.flags:
            entry.flags.remove('fuzzy')
        entry.previous_msgid = None
        if key(entry) in pending:
            filled += 1
    return filled, problems

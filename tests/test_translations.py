# SPDX-License-Identifier: GPL-3.0-or-later
"""Every string of the module is translated in every shipped language
(locale/<lang>.po, checked once the file exists), and the catalogues load
the way trytond loads them on a module update."""
import types
import unittest

from trytond.tests.test_tryton import activate_module, with_transaction

from . import translations

HOW_TO = ('run `.venv/bin/python scripts/translate.py` then fill the entries '
    'with `scripts/translate.py --missing LANG` / `--apply LANG FILE.json` '
    '(README, "Translations")')


def describe(entries, limit=15):
    lines = ['  %s %r' % (e.msgctxt, e.msgid) for e in entries[:limit]]
    if len(entries) > limit:
        lines.append('  ... and %d more' % (len(entries) - limit))
    return '\n'.join(lines)


class TranslationsTestCase(unittest.TestCase):
    "The module's translation catalogues"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        activate_module(translations.MODULE)

    # What the module ships, read the same on every backend: the SQLite
    # phase only (tests/conftest.py); the loading below runs on both.
    def test_languages_shipped(self):
        "At least the catalogues of this branch exist."
        self.assertTrue(translations.existing_languages(),
            'no locale/<lang>.po of %s' % ', '.join(translations.LANGUAGES))

    @with_transaction()
    def test_every_string_translated(self):
        """Each catalogue holds exactly the strings Tryton exports for the
        module now, each translated, none fuzzy, placeholders kept."""
        for lang in translations.existing_languages():
            with self.subTest(lang=lang):
                template = translations.export_catalogue(lang)
                catalogue = translations.load(lang)
                have = {translations.key(e) for e in catalogue
                    if not e.obsolete}
                new = [e for e in template
                    if translations.key(e) not in have]
                wanted = {translations.key(e) for e in template}
                stale = [e for e in catalogue if not e.obsolete
                    and translations.key(e) not in wanted]
                self.assertEqual(len(new), 0, '%s.po lacks %d string(s) '
                    'of the module (%s):\n%s' % (lang, len(new), HOW_TO,
                        describe(new)))
                self.assertEqual(len(stale), 0, '%s.po holds %d string(s) '
                    'the module no longer has (%s):\n%s' % (lang, len(stale),
                        HOW_TO, describe(stale)))
                todo = translations.untranslated(catalogue)
                self.assertEqual(len(todo), 0, '%s.po: %d untranslated or '
                    'fuzzy (%s):\n%s' % (lang, len(todo), HOW_TO,
                        describe(todo)))
                wrong = translations.placeholder_errors(catalogue)
                self.assertEqual(len(wrong), 0, '%s.po: placeholders '
                    'differ from the source:\n%s' % (lang, describe(wrong)))

    test_languages_shipped.same_on_every_backend = True
    test_every_string_translated.same_on_every_backend = True

    @with_transaction()
    def test_catalogues_load_for_a_user_of_the_language(self):
        """trytond's loader (run on module update) reads each catalogue;
        a user of that language reads the translated field labels, menu
        and messages over the ORM."""
        from trytond.i18n import gettext
        from trytond.modules import get_module_info, load_translations
        from trytond.pool import Pool
        from trytond.transaction import Transaction
        pool = Pool()
        User = pool.get('res.user')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        Menu = pool.get('ir.ui.menu')
        ModelData = pool.get('ir.model.data')
        node = types.SimpleNamespace(name=translations.MODULE,
            info=get_module_info(translations.MODULE))
        for lang in translations.existing_languages():
            with self.subTest(lang=lang):
                catalogue = translations.load(lang)
                expected = {e.msgctxt: e.msgstr for e in catalogue
                    if e.msgstr and 'fuzzy' not in e.flags}
                language = translations.ensure_language(lang)
                language.translatable = True
                language.save()
                codes = {lang}
                if '_' in lang:
                    codes.add(lang.split('_')[0])
                load_translations(pool, node, codes)
                user, = User.create([{
                            'name': 'Reader %s' % lang,
                            'login': 'reader_%s' % lang.lower(),
                            'language': language.id,
                            }])
                with Transaction().set_user(user.id), \
                        Transaction().set_context(
                            User.get_preferences(context_only=True)):
                    self.assertEqual(
                        Transaction().context.get('language'), lang)
                    checks = []
                    context = ('field:gnuhealth.imaging_orthanc.study,'
                        'patient_birth_date:')
                    checks.append((context, Study.fields_get(
                                ['patient_birth_date'])[
                                'patient_birth_date']['string']))
                    context = ('help:gnuhealth.imaging_orthanc.study,'
                        'link_review:')
                    checks.append((context, Study.fields_get(
                                ['link_review'])['link_review']['help']))
                    menu = Menu(ModelData.get_id(translations.MODULE,
                            'orthanc_menu'))
                    checks.append(('model:ir.ui.menu,name:orthanc_menu',
                            menu.name))
                    checks.append((
                            'model:ir.message,text:msg_upload_empty',
                            gettext('health_orthanc.msg_upload_empty')))
                    compared = 0
                    for context, shown in checks:
                        if context not in expected:
                            continue  # untranslated: the test above says so
                        self.assertEqual(shown, expected[context], context)
                        compared += 1
                    self.assertTrue(compared or not expected,
                        'none of the checked strings is translated')

    def test_merge_keeps_translations(self):
        """The tool's merge: translations kept, new strings empty, a
        reworded field keeps its old translation as fuzzy, dropped
        strings removed; --apply refuses a lost placeholder."""
        import polib

        def catalogue(*entries):
            result = polib.POFile()
            for context, source, text in entries:
                result.append(polib.POEntry(msgctxt=context, msgid=source,
                        msgstr=text))
            return result
        existing = catalogue(
            ('field:m,a:', 'Study', 'Estudio'),
            ('field:m,b:', 'Study date', 'Fecha del estudio'),
            ('view:m:', 'Gone', 'Desaparecido'))
        template = catalogue(
            ('field:m,a:', 'Study', ''),
            ('field:m,b:', 'Date of the study', ''),
            ('model:ir.message,text:msg', 'Server "%(server)s"', ''))
        merged = {e.msgctxt: e for e in translations.merge(
                template, existing, 'es')}
        prefilled = translations.missing_json(catalogue(
                ('field:m,a:', 'Study', 'Estudio'),
                ('field:n,a:', 'Study', '')))
        self.assertEqual([(i['translation'], i.get('prefilled'))
                for i in prefilled], [('Estudio', True)])
        self.assertEqual(sorted(merged), ['field:m,a:', 'field:m,b:',
                'model:ir.message,text:msg'])
        self.assertEqual(merged['field:m,a:'].msgstr, 'Estudio')
        self.assertEqual(merged['field:m,b:'].msgstr, 'Fecha del estudio')
        self.assertIn('fuzzy', merged['field:m,b:'].flags)
        self.assertEqual(merged['field:m,b:'].previous_msgid, 'Study date')
        self.assertEqual(merged['model:ir.message,text:msg'].msgstr, '')
        result = catalogue(*[(e.msgctxt, e.msgid, e.msgstr)
                for e in merged.values()])
        result[1].flags = ['fuzzy']
        filled, problems = translations.apply(result, [
                {'context': 'model:ir.message,text:msg',
                    'source': 'Server "%(server)s"',
                    'translation': 'Servidor'}])
        self.assertEqual((filled, len(problems)), (0, 1))
        filled, problems = translations.apply(result, {
                'Date of the study': 'Fecha del estudio',
                'Server "%(server)s"': 'Servidor "%(server)s"'})
        self.assertEqual((filled, problems), (2, []))
        self.assertEqual(translations.untranslated(result), [])

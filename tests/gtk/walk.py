# SPDX-License-Identifier: GPL-3.0-or-later
"""Walk health_orthanc's screens in the GNU Health GTK client.

Runs inside the client's own Python (build/venv-gtk, started by
tests/gtk_run.py under Xvfb): logs in without a dialog, then opens every
menu entry, window action and first wizard step of the module, every
list and form view of the module (inherited ones in their parent view),
and fills the upload wizard's `binary_dicom` field as its file chooser
would, up to the result.  A screenshot of the screen is saved per step.
Every error dialog, warning dialog, uncaught exception or logged error
is recorded; the summary goes to GTK_WALK_RESULT (JSON).

Environment: GTK_WALK_HOST (host:port), GTK_WALK_DB, GTK_WALK_LOGIN,
GTK_WALK_PASSWORD, GTK_WALK_SHOTS (folder), GTK_WALK_RESULT,
GTK_WALK_FILES (DICOM files to upload, ':'-separated).
"""
import json
import logging
import os
import sys
import traceback
import webbrowser
from xml.etree import ElementTree

import gi
gi.require_version('Gdk', '3.0')
gi.require_version('Gtk', '3.0')
from gi.repository import Gdk, GLib, Gtk  # noqa: E402

MODULE = 'health_orthanc'
UPLOAD_WIZARD = 'gnuhealth.imaging_orthanc.upload_image_data'
STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
# Wizards whose first state acts (a transition), with no screen to open.
ACTING_WIZARDS = {'gnuhealth.imaging_orthanc.series_instances.attach'}
SETTLE_MS = 1200

RESULT = {'steps': [], 'errors': []}


def record_error(kind, text):
    RESULT['errors'].append({'step': current_step(), 'kind': kind,
            'text': str(text)[-4000:]})  # a traceback's end says what
    print('GTK WALK ERROR [%s] %s: %s' % (current_step(), kind, text),
        file=sys.stderr, flush=True)


def current_step():
    return RESULT['steps'][-1]['name'] if RESULT['steps'] else 'login'


class ErrorLog(logging.Handler):
    "Errors the client logs (its error dialog logs each one too)."

    def emit(self, record):
        record_error('log', self.format(record))


def patch_client(password):
    "No dialog may block the walk: dialogs are recorded as errors."
    from gnuhealth.common import common

    def no_dialog(self, *args, **kwargs):
        record_error(type(self).__name__, ' | '.join(map(str, args)))
        return Gtk.ResponseType.CANCEL

    common.UniqueDialog.__call__ = no_dialog
    # A url widget's button opens a browser: record the address instead.
    webbrowser.open = lambda url, *args, **kwargs: RESULT.setdefault(
        'opened', []).append(url)
    # The login asks the password through a dialog: answer it.
    common.Login.get_password = classmethod(lambda cls, message: password)

    def excepthook(type_, value, tb):
        record_error('exception',
            ''.join(traceback.format_exception(type_, value, tb)))
    sys.excepthook = excepthook
    handler = ErrorLog(logging.ERROR)
    handler.setFormatter(logging.Formatter('%(name)s: %(message)s'))
    logging.getLogger().addHandler(handler)


def configure():
    from gnuhealth.config import CONFIG
    sys.argv = sys.argv[:1]
    CONFIG.parse()
    CONFIG['login.host'] = os.environ['GTK_WALK_HOST']
    CONFIG['login.db'] = os.environ['GTK_WALK_DB']
    CONFIG['login.login'] = os.environ['GTK_WALK_LOGIN']
    CONFIG['login.profile'] = ''
    CONFIG['login.expanded'] = True
    # RPC in the main loop: each step sees its screen loaded, and no
    # background call races the login (the device cookie renewal).
    CONFIG['thread'] = False


def rpc(model, method, *args):
    from gnuhealth.common import RPCExecute
    return RPCExecute('model', model, method, *args)


def module_ids(model):
    "Database ids of the module's records of model, in XML order."
    data = rpc('ir.model.data', 'search_read',
        [('module', '=', MODULE), ('model', '=', model)], 0, None,
        [('id', 'ASC')], ['db_id', 'fs_id'])
    return [(d['db_id'], d['fs_id']) for d in data]


def first_id(model, domain=()):
    ids = rpc(model, 'search', list(domain), 0, 1, None)
    return ids[0] if ids else None


def label_text(widget):
    if isinstance(widget, Gtk.Label):
        return widget.get_text()
    if isinstance(widget, Gtk.Container):
        return ' '.join(label_text(c) for c in widget.get_children())
    return ''


def added_tabs(arch):
    "The labels of the tabs an inherited view adds to its form."
    return {page.get('string') for page in ElementTree.fromstring(
            arch).iter('page') if page.get('string')}


def show_tab(widget, names):
    "Bring forward the notebook pages named in names; True if one was."
    shown = False
    if isinstance(widget, Gtk.Notebook):
        for number in range(widget.get_n_pages()):
            page = widget.get_nth_page(number)
            if label_text(widget.get_tab_label(page)).strip() in names:
                widget.set_current_page(number)
                shown = True
    if isinstance(widget, Gtk.Container):
        for child in widget.get_children():
            shown = show_tab(child, names) or shown
    return shown


def stored(model):
    "False for the models of wizard screens (no search over RPC)."
    from gnuhealth.common import RPCException, RPCExecute
    try:
        RPCExecute('model', model, 'search_count', [],
            process_exception=False)
    except RPCException:
        RESULT.setdefault('wizard_screens', []).append(model)
        return False
    return True


def screenshot(name):
    root = Gdk.get_default_root_window()
    pixbuf = Gdk.pixbuf_get_from_window(root, 0, 0,
        root.get_width(), root.get_height())
    path = os.path.join(os.environ['GTK_WALK_SHOTS'], 'gtk-%02d-%s.png'
        % (len(RESULT['steps']), name.replace('/', '_')))
    pixbuf.savev(path, 'png', [], [])
    RESULT['steps'][-1]['screenshot'] = path


class Walk:
    "A generator of steps; each yield lets the client work SETTLE_MS."

    def __init__(self, main):
        self.main = main
        self.wizards = []
        from gnuhealth.gui.window import wizard
        walk = self
        original = wizard.Wizard.run

        def run(self, *args, **kwargs):
            walk.wizards.append(self)
            return original(self, *args, **kwargs)
        wizard.Wizard.run = run

    def step(self, name, **info):
        RESULT['steps'].append(dict(name=name, **info))
        print('GTK WALK step %s' % name, flush=True)

    def open(self, function, *args, **kwargs):
        """Call the client's own entry point; what it raises is what a
        user sees in an error dialog: record it and walk on."""
        try:
            function(*args, **kwargs)
        except Exception:
            record_error('exception', traceback.format_exc())

    def close_all(self):
        "Close wizards, then tabs, as a user would."
        for wiz in self.wizards:
            if getattr(wiz, 'session_id', None) is not None:
                wiz.end()
        self.wizards.clear()
        while self.main.notebook.get_n_pages():
            count = self.main.notebook.get_n_pages()
            self.main.sig_win_close()
            if self.main.notebook.get_n_pages() == count:
                record_error('close', 'a tab does not close')
                break

    def page(self):
        return self.main.get_page()

    def steps(self):
        from gnuhealth.action import Action
        from gnuhealth.gui.window import Window
        yield from self.menus(Action)
        yield from self.actions(Action)
        yield from self.views(Window)
        yield from self.complete(Action)

    def menus(self, Action):
        for menu_id, fs_id in module_ids('ir.ui.menu'):
            menu, = rpc('ir.ui.menu', 'read', [menu_id],
                ['action', 'complete_name'])
            if not menu.get('action'):
                continue
            self.step('menu-' + fs_id, menu=menu['complete_name'])
            self.open(Action.exec_keyword, 'tree_open', {
                    'model': 'ir.ui.menu', 'id': menu_id, 'ids': [menu_id]})
            yield
            screenshot('menu-' + fs_id)
            yield from self.switch_to_form('menu-' + fs_id)
            self.close_all()
            yield

    def switch_to_form(self, name):
        "A list with records: open the first one in its form view."
        page = self.page()
        screen = getattr(page, 'screen', None)
        if (screen is None or screen.current_view.view_type != 'tree'
                or not screen.group):
            return
        self.step(name + '-form')
        screen.current_record = screen.group[0]
        self.open(page.sig_switch)
        yield
        screenshot(name + '-form')
        self.click_urls(name + '-form')

    def click_urls(self, name):
        """The url widgets of the form: their addresses, and what their
        button opens."""
        from gnuhealth.gui.window.view_form.view.form_gtk.url import URL
        page = self.page()
        if page is None or getattr(page, 'screen', None) is None:
            return  # it did not open: recorded already
        view = page.screen.current_view
        urls = {}
        for field, widgets in view.widgets.items():
            for widget in widgets:
                if type(widget) is URL:
                    RESULT['opened'] = []
                    widget.button_clicked(widget.button)
                    urls[field] = {'shown': widget.entry.get_text(),
                        'opened': RESULT.pop('opened')}
        if urls:
            RESULT.setdefault('url_widgets', {})[name] = urls

    def keyword_models(self, action_id):
        keywords = rpc('ir.action.keyword', 'search_read',
            [('action', '=', action_id)], 0, None, None, ['model'])
        return [k['model'].split(',')[0] for k in keywords if k['model']]

    def actions(self, Action):
        "Window actions and wizards opened from a record (relate, action)."
        for model in ['ir.action.act_window', 'ir.action.wizard']:
            for action_id, fs_id in module_ids(model):
                action, = rpc(model, 'read', [action_id],
                    ['action', 'name', 'wiz_name' if 'wizard' in model
                        else 'res_model'])
                if action.get('wiz_name') in ACTING_WIZARDS:
                    continue
                for source in self.keyword_models(action['action']):
                    if source == 'ir.ui.menu':
                        continue  # opened by the menu walk
                    record = first_id(source)
                    if record is None:
                        record_error('data', 'no %s record to open %s'
                            % (source, fs_id))
                        continue
                    name = 'action-%s-%s' % (fs_id, source.split('.')[-1])
                    self.step(name, action=action['name'])
                    self.open(Action.execute, action['action'], {
                            'model': source, 'id': record, 'ids': [record]})
                    yield
                    screenshot(name)
                    self.close_all()
                    yield

    def views(self, Window):
        "Every list and form view of the module, in its own window."
        for view_id, fs_id in module_ids('ir.ui.view'):
            view, = rpc('ir.ui.view', 'read', [view_id],
                ['model', 'type', 'inherit', 'arch'])
            top = view
            while top.get('inherit'):
                top, = rpc('ir.ui.view', 'read', [top['inherit']],
                    ['model', 'type', 'inherit'])
            model, kind = top['model'], top['type']
            if kind not in ('tree', 'form') or not stored(model):
                continue  # wizard screens: opened by their wizards
            record = first_id(model)
            name = 'view-' + fs_id
            self.step(name, model=model, view_type=kind)
            attributes = {'view_ids': [top['id']], 'mode': [kind]}
            if kind == 'form' and record is not None:
                attributes['res_id'] = record
            elif kind == 'form':
                # No record (e.g. no sync problem): the form of a new one,
                # never saved.
                RESULT.setdefault('empty_forms', []).append(model)
            self.open(Window.create, model, **attributes)
            yield
            screenshot(name)
            if kind == 'form':
                self.click_urls(name)
            if view.get('inherit') and show_tab(self.main.notebook,
                    added_tabs(view['arch'])):
                self.step(name + '-tab')
                yield
                screenshot(name + '-tab')
            self.close_all()
            yield

    def complete(self, Action):
        "Wizards through to their last screen, filled in as a user would."
        orthanc = json.loads(os.environ['GTK_WALK_ORTHANC'])
        yield from self.complete_wizard(Action, 'add-server',
            'gnuhealth.imaging_orthanc.wizard.orthanc_new_connect',
            'connect', {'label': 'GTK added PACS', **orthanc})
        yield from self.complete_wizard(Action, 'sync',
            'gnuhealth.imaging_orthanc.get_new_studies', 'sync', {})
        yield from self.complete_wizard(Action, 'upload', UPLOAD_WIZARD,
            'upload', {}, fill=self.choose_files)
        # In a GTK list the button acts on the tree's selection, which a
        # record set as current does not make: both are clicked on forms.
        yield from self.delete_with_button(SERIES, 'delete_series', 'form')
        yield from self.delete_with_button(STUDY, 'delete_study', 'form')

    def delete_with_button(self, model, button, kind):
        """Delete study / Delete series clicked as the administrator does,
        in a list or a form: no error, and the list shows what is left."""
        from gnuhealth.gui.window import Window
        name = 'delete-' + button
        before = rpc(model, 'search_count', [])
        self.step(name, model=model, view_type=kind)
        self.open(Window.create, model, mode=['tree', 'form'])
        yield
        screen = self.page().screen
        if not screen.group:
            record_error('data', 'no %s record to delete' % model)
            self.close_all()
            return
        screen.current_record = screen.group[0]
        # selected in the list, as a click does
        screen.display(set_cursor=True)
        yield
        if kind == 'form':
            self.open(self.page().sig_switch)
            yield
        self.open(screen.button, {'name': button})
        yield
        yield
        screenshot(name)
        RESULT.setdefault('deleted', {})[button] = {
            'before': before, 'after': rpc(model, 'search_count', []),
            'view': kind,
            # a form shows the deleted record (as "Deleted"), a list the
            # remaining ones
            'shown': len(screen.group) if kind == 'tree' else None}
        self.close_all()
        yield

    def complete_wizard(self, Action, name, wiz_name, button, values,
            fill=None):
        action_id = rpc('ir.action.wizard', 'search',
            [('wiz_name', '=', wiz_name)], 0, 1, None)[0]
        action, = rpc('ir.action.wizard', 'read', [action_id], ['action'])
        self.step(name + '-filled')
        self.open(Action.execute, action['action'], {})
        yield
        wizard = self.wizards[-1]
        record = wizard.screen.current_record
        for field, value in values.items():
            record[field].set_client(record, value)
        if fill:
            fill(wizard)
        wizard.screen.display()
        yield
        screenshot(name + '-filled')
        self.step(name + '-done')
        wizard.states[button].clicked()
        yield
        yield
        record = wizard.screen.current_record
        if record is None:
            record_error('wizard', '%s: no screen after %s' % (wiz_name,
                    button))
            self.close_all()
            return
        RESULT[name] = {field: str(record[field].get(record))
            for field in record.group.fields
            if field in ('stored', 'rejected', 'summary', 'status',
                'message', 'created', 'updated')}
        screenshot(name + '-done')
        self.close_all()
        yield

    def choose_files(self, wizard):
        "binary_dicom: what its file chooser does with the chosen files."
        from gnuhealth.gui.window.view_form.view.form_gtk.binary_dicom \
            import BinaryDicom
        widgets = [w for ws in wizard.screen.current_view.widgets.values()
            for w in ws if isinstance(w, BinaryDicom)]
        if len(widgets) != 1:
            record_error('binary_dicom', 'the upload form has %d '
                'binary_dicom widgets' % len(widgets))
            return
        paths = os.environ['GTK_WALK_FILES'].split(':')
        widgets[0]._set_uris([GLib.filename_to_uri(os.path.abspath(path),
                    None) for path in paths])


def start(main):
    # The pointer in a corner: no tooltip over the screenshots.
    display = Gdk.Display.get_default()
    display.get_default_seat().get_pointer().warp(
        display.get_default_screen(), 1, 1)
    walk = Walk(main)
    steps = walk.steps()

    def advance():
        try:
            next(steps)
        except StopIteration:
            finish(main)
            return False
        except Exception:
            record_error('walk', traceback.format_exc())
            finish(main)
            return False
        return True
    GLib.timeout_add(SETTLE_MS, advance)


def finish(main):
    with open(os.environ['GTK_WALK_RESULT'], 'w') as fp:
        json.dump(RESULT, fp, indent=2)
    print('GTK WALK done: %d steps, %d errors' % (
            len(RESULT['steps']), len(RESULT['errors'])), flush=True)
    main.quit()


def main():
    from gnuhealth import gui, translate
    from gnuhealth.config import CONFIG
    configure()
    patch_client(os.environ['GTK_WALK_PASSWORD'])
    translate.setlang(CONFIG['client.lang'])
    app = gui.Main(application_id='org.gnuhealth.orthanc-walk')
    original = type(app).get_preferences

    def get_preferences(self):
        original(self)
        if not getattr(self, '_walk_started', False):
            self._walk_started = True
            start(self)
    type(app).get_preferences = get_preferences
    app.run([sys.argv[0]])
    return 0


if __name__ == '__main__':
    sys.exit(main())

# SPDX-License-Identifier: GPL-3.0-or-later
"""Open in viewer without the PACS password: study-scoped, expiring viewer
tokens checked by the Orthanc-side script (orthanc_side/), and the log of
who opened what.

A server whose last check did not find the script (with the same secret)
keeps the plain viewer links of study.py.
"""
import logging
import secrets

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from . import links, orthanc
from .exceptions import ViewerAccessError, ViewerSecretError
from .orthanc_side import viewer_token

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = 10  # minutes
LOG_MODEL = 'gnuhealth.imaging_orthanc.viewer_access'
# viewer -> the server flag saying its plugin is installed
VIEWER_FLAGS = {
    'webviewer': 'has_webviewer',
    'stone': 'has_stone',
    'ohif': 'has_ohif',
    }


class ServerConfig(metaclass=PoolMeta):
    __name__ = 'gnuhealth.orthanc.config'

    viewer_secret = fields.Char('Viewer secret', strip=False,
        help="Secret shared with the viewer-access script on the Orthanc "
        "host (its \"ViewerSecret\"); changing it invalidates every viewer "
        "link issued so far")
    viewer_token_lifetime = fields.Integer('Viewer link lifetime (min)',
        required=True, domain=[('viewer_token_lifetime', '>', 0)],
        help="How long a viewer opened from GNU Health may read the study")
    viewer_tokens = fields.Boolean('Viewer links without password',
        readonly=True,
        help="The last check found the viewer-access script on Orthanc, "
        "holding the same secret")
    anonymous_access = fields.Boolean('Answers anonymous requests',
        readonly=True,
        help="The last check found that Orthanc answers requests without "
        "credentials")

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('//label[@id="anonymous_warning"]', 'states', {
                    'invisible': ~Eval('anonymous_access', False),
                    }),
            ]

    @staticmethod
    def default_viewer_token_lifetime():
        return DEFAULT_TOKEN_LIFETIME

    @staticmethod
    def default_viewer_tokens():
        return False

    @staticmethod
    def default_anonymous_access():
        return False

    @classmethod
    def validate_fields(cls, servers, field_names):
        super().validate_fields(servers, field_names)
        if 'viewer_secret' in field_names:
            cls.check_viewer_secret(servers)

    @classmethod
    def check_viewer_secret(cls, servers):
        "The script refuses to start with a shorter secret."
        for server in servers:
            secret = server.viewer_secret
            if secret and len(secret) < viewer_token.MIN_SECRET_LENGTH:
                raise ViewerSecretError(gettext(
                        'health_orthanc.msg_viewer_secret_short',
                        server=server.label,
                        length=viewer_token.MIN_SECRET_LENGTH))

    @classmethod
    def write(cls, *args):
        super().write(*args)
        # A new secret needs the script's new one: check again.  The flag
        # is the system's, so it is reset without the people's field check.
        actions = iter(args)
        new_secret = [server for servers, values in zip(actions, actions)
            if 'viewer_secret' in values and 'viewer_tokens' not in values
            for server in servers]
        if new_secret:
            with without_check_access():
                super().write(new_secret, {'viewer_tokens': False})

    @classmethod
    def copy(cls, servers, default=None):
        default = dict(default or {})
        default.setdefault('viewer_secret', None)
        default.setdefault('viewer_tokens', False)
        return super().copy(servers, default=default)

    @classmethod
    @ModelView.button
    def check_connection(cls, servers):
        super().check_connection(servers)
        args = []
        for server in servers:
            if server.validated:
                args.extend(([server], server._viewer_access_values()))
        if args:
            cls.write(*args)

    @without_check_access
    def _viewer_access_values(self):
        "What the script and anonymous access look like now."
        client = self.client
        try:
            anonymous = client.answers_anonymously()
            proof = client.viewer_access_proof(viewer_token.STATUS_ROUTE,
                challenge := secrets.token_urlsafe(16))
        except orthanc.OrthancError as exc:
            logger.info("Viewer access check of %s failed: %s",
                orthanc.redact(self.domain), exc)
            anonymous, proof = False, None
        if proof is None:
            tokens, message = False, 'msg_viewer_check_no_script'
        elif not self.viewer_secret:
            tokens, message = False, 'msg_viewer_check_no_secret'
        elif proof != viewer_token.proof(self.viewer_secret, challenge):
            tokens, message = False, 'msg_viewer_check_secret_mismatch'
        else:
            tokens, message = True, 'msg_viewer_check_tokens_ok'
        lines = [self.check_message or '', gettext('health_orthanc.' + message)]
        if anonymous:
            lines.append(gettext('health_orthanc.msg_viewer_anonymous'))
        return {
            'viewer_tokens': tokens,
            'anonymous_access': anonymous,
            'check_message': '\n'.join(filter(None, lines)),
            }

    @without_check_access
    def issue_viewer_token(self, study, viewer, series=None):
        "A token for the current user to open study in viewer."
        User = Pool().get('res.user')
        user = User(Transaction().user)
        return viewer_token.issue(self.viewer_secret,
            study=study.orthanc_UID, study_uid=study.study_instance_UID,
            user=user.login, lifetime=self.viewer_token_lifetime * 60,
            viewer=viewer,
            series=series.orthanc_UID if series else None,
            series_uid=series.series_UID if series else None)


class ViewerButtons:
    "Open in viewer buttons on studies and series, one per viewer found."
    __slots__ = ()
    _viewers = ()

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'open_' + viewer: {
                    'invisible': ~Eval('can_open_' + viewer, False),
                    'depends': ['can_open_' + viewer],
                    }
                for viewer in cls._viewers})

    @classmethod
    def get_can_open(cls, records, names):
        "Reads the servers only (Tryton's cache): no network I/O."
        result = {name: {} for name in names}
        for record in records:
            server = record.server
            for name in names:
                viewer = name[len('can_open_'):]
                result[name][record.id] = bool(server.viewer_tokens
                    and getattr(server, VIEWER_FLAGS[viewer]))
        return result

    @classmethod
    def open_viewer(cls, records, viewer):
        "A URL action opening the first record in viewer, logged."
        ViewerAccess = Pool().get(LOG_MODEL)
        record = records[0]
        study, series = record._study_and_series()
        server = study.server
        name = 'can_open_' + viewer
        if not cls.get_can_open([record], [name])[name][record.id]:
            raise ViewerAccessError(gettext(
                    'health_orthanc.msg_viewer_unavailable',
                    server=server.rec_name))
        if viewer == 'webviewer' and series is None:
            # The Web Viewer opens a series; it lists the study's others.
            if not study.series:
                raise ViewerAccessError(gettext(
                        'health_orthanc.msg_viewer_no_series',
                        study=study.rec_name))
            series = study.series[0]
        token = server.issue_viewer_token(study, viewer, series)
        ViewerAccess.record([record], viewer,
            server.viewer_token_lifetime * 60)
        return {
            'type': 'ir.action.url',
            'url': links.viewer_open(server.public_url, token),
            }

    # Buttons are declared (hence callable over RPC) only for _viewers.
    @classmethod
    @ModelView.button
    def open_webviewer(cls, records):
        return cls.open_viewer(records, 'webviewer')

    @classmethod
    @ModelView.button
    def open_stone(cls, records):
        return cls.open_viewer(records, 'stone')

    @classmethod
    @ModelView.button
    def open_ohif(cls, records):
        return cls.open_viewer(records, 'ohif')

class Study(ViewerButtons, metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.study'
    _viewers = ('webviewer', 'stone', 'ohif')

    can_open_webviewer = fields.Function(fields.Boolean(
            'Can open the Orthanc Web Viewer'), 'get_can_open')
    can_open_stone = fields.Function(fields.Boolean(
            'Can open the Stone Web Viewer'), 'get_can_open')
    can_open_ohif = fields.Function(fields.Boolean(
            'Can open the OHIF viewer'), 'get_can_open')
    viewer_accesses = fields.One2Many(LOG_MODEL, 'study', 'Viewer openings',
        readonly=True)

    def _study_and_series(self):
        return self, None


class Series(ViewerButtons, metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.study_series'
    _viewers = ('webviewer', 'stone')

    can_open_webviewer = fields.Function(fields.Boolean(
            'Can open the Orthanc Web Viewer'), 'get_can_open')
    can_open_stone = fields.Function(fields.Boolean(
            'Can open the Stone Web Viewer'), 'get_can_open')

    def _study_and_series(self):
        return self.study, self


class Patient(metaclass=PoolMeta):
    __name__ = 'gnuhealth.patient'

    orthanc_viewer_accesses = fields.One2Many(LOG_MODEL, 'patient',
        'Imaging viewer openings', readonly=True)

# SPDX-License-Identifier: GPL-3.0-or-later
"""Who may do what: the checks that trytond does not make by itself.

The role table (README, "Security") is declared in XML: ir.model.access and
ir.model.field.access for models and fields, ir.model.button groups for
buttons, ir.action-res.group for wizards.  This module enforces what XML
alone cannot:

- wizard transitions run without access checks and trust the action_id the
  client sends, so every call of a wizard of this module checks that the
  caller is in a group of one of the wizard's actions (none: root only);
- the mirror of Orthanc is written by the system: over RPC people write
  only the fields they own (notes) and create or delete no mirror record;
  server status (validation, sync cursor and results) is the system's too;
- changes to servers are recorded in the model log (field names only,
  never values), also when made by a wizard.
"""
from functools import reduce
from operator import or_

from trytond.cache import Cache
from trytond.i18n import gettext
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, Id
from trytond.transaction import (
    Transaction, check_access, without_check_access)

SERVER = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'

# Buttons shown only to the roles that may click them.  The groups of
# ir.model.button-res.group are what the server enforces; a button of a view
# is then only greyed out for the others.  These states hide it instead,
# from the groups the client has in its context (the user's own groups, not
# their parents: hence both groups for imaging users).
ADMIN = 'group_imaging_orthanc_admin'
IMAGING = 'group_imaging_orthanc'


def hidden_unless(*groups):
    "PYSON: true unless the user is in one of groups (XML ids)."
    user_groups = Eval('context', {}).get('groups', [])
    return ~reduce(or_, (Id('health_orthanc', g).in_(user_groups)
            for g in groups))


def admin_only():
    return hidden_unless(ADMIN)


def imaging_only():
    return hidden_unless(IMAGING, ADMIN)


def from_client():
    """True when a user's call is access-checked: an RPC call, not the
    system (user 0) nor code running without access checks (sync, buttons,
    wizard transitions)."""
    transaction = Transaction()
    return transaction.user != 0 and transaction.check_access


def writable(records):
    """The records the user may write (model access and record rules),
    also where access is not checked (buttons, wizard transitions)."""
    pool = Pool()
    ModelAccess = pool.get('ir.model.access')
    Rule = pool.get('ir.rule')
    records = list(records)
    if not records or Transaction().user == 0:
        return records
    Model = records[0].__class__
    with check_access():
        if not ModelAccess.check(Model.__name__, 'write',
                raise_exception=False):
            return []
        domain = Rule.domain_get(Model.__name__, mode='write')
    if not domain:
        return records
    with without_check_access():
        allowed = set(Model.search([
                    ('id', 'in', [r.id for r in records]), domain]))
    return [r for r in records if r in allowed]


# --- wizards ----------------------------------------------------------------

# The groups of each wizard's actions: trytond reads them anew on every
# call (about 0.2 s, most of a streamed file's overhead); cleared when an
# action's groups change (ActionGroup below).
_wizard_groups = Cache('health_orthanc.wizard_groups', context=False)


def wizard_groups(wizard_name):
    "The ids of the groups of the wizard's actions (cached)."
    groups = _wizard_groups.get(wizard_name)
    if groups is None:
        ActionWizard = Pool().get('ir.action.wizard')
        groups = sorted(ActionWizard.get_groups(wizard_name))
        _wizard_groups.set(wizard_name, groups)
    return set(groups)


class ActionGroup(metaclass=PoolMeta):
    __name__ = 'ir.action-res.group'

    @classmethod
    def create(cls, vlist):
        _wizard_groups.clear()
        return super().create(vlist)

    @classmethod
    def write(cls, *args):
        _wizard_groups.clear()
        super().write(*args)

    @classmethod
    def delete(cls, records):
        _wizard_groups.clear()
        super().delete(records)


@without_check_access
def check_wizard_role(wizard_name):
    """Refuse the wizard unless the user is in a group of one of its
    actions, whatever action_id the client sent."""
    pool = Pool()
    ActionWizard = pool.get('ir.action.wizard')
    User = pool.get('res.user')
    if Transaction().user == 0:
        return
    allowed = wizard_groups(wizard_name)
    if not allowed & set(User.get_groups()):
        raise AccessError(gettext('health_orthanc.msg_role_wizard',
                wizard=ActionWizard.get_name(wizard_name, None)))


class RoleCheckedWizard:
    "A wizard whose every call checks the caller's role."
    __slots__ = ()

    @classmethod
    def create(cls):
        check_wizard_role(cls.__name__)
        return super().create()

    @classmethod
    def execute(cls, session_id, data, state_name):
        check_wizard_role(cls.__name__)
        return super().execute(session_id, data, state_name)


# Every wizard of the module: a new wizard is added here.
WIZARDS = [
    'gnuhealth.imaging_orthanc.wizard.orthanc_new_connect',
    'gnuhealth.imaging_orthanc.get_new_studies',
    'gnuhealth.imaging_orthanc.full_synchronize',
    'gnuhealth.imaging_orthanc.upload_image_data',
    'gnuhealth.imaging_orthanc.series_instances.attach',
    'gnuhealth.imaging_orthanc.study.link_patient',
    'gnuhealth.imaging_orthanc.study.reconcile',
    ]


def role_checked_wizards():
    "The extensions that check the role on every call of WIZARDS."
    return [PoolMeta('RoleChecked', (RoleCheckedWizard,),
            {'__name__': name, '__module__': __name__}) for name in WIZARDS]


# --- the mirror -------------------------------------------------------------

class SystemWritten:
    """Records whose fields are the system's but _people_fields: an
    access-checked call may write only those, and create or delete a
    record only if _people_create (model access decides who)."""
    __slots__ = ()
    _people_fields = frozenset()
    _people_create = False

    @classmethod
    def create(cls, vlist):
        if from_client():
            if not cls._people_create:
                cls._refuse_create()
            cls._check_people_fields(set().union(*vlist))
        return super().create(vlist)

    @classmethod
    def write(cls, *args):
        if from_client():
            actions = iter(args)
            cls._check_people_fields(set().union(
                    *(values for _, values in zip(actions, actions))))
        super().write(*args)

    @classmethod
    def delete(cls, records):
        if from_client() and not cls._people_create:
            cls._refuse_create()
        super().delete(records)

    @classmethod
    def _check_people_fields(cls, names):
        forbidden = sorted(set(names) - cls._people_fields)
        if forbidden:
            raise AccessError(gettext('health_orthanc.msg_mirror_write',
                    model=cls.__names__()['model'],
                    fields=', '.join(cls.__names__(n)['field']
                        for n in forbidden)))

    @classmethod
    def _refuse_create(cls):
        raise AccessError(gettext('health_orthanc.msg_mirror_create',
                model=cls.__names__()['model']))


class Study(SystemWritten, metaclass=PoolMeta):
    __name__ = STUDY
    _people_fields = frozenset({'notes', 'merge_comment'})


class Series(SystemWritten, metaclass=PoolMeta):
    __name__ = SERIES
    _people_fields = frozenset({'notes'})


class Instance(SystemWritten, metaclass=PoolMeta):
    __name__ = INSTANCE


class Server(SystemWritten, metaclass=PoolMeta):
    """Imaging administrators set a server up; its status (validation,
    what Orthanc reported, the sync cursor and results) is the system's.
    Every change to its settings is in the model log."""
    __name__ = SERVER
    _people_fields = frozenset({'label', 'domain', 'proxy_domain', 'user',
            'password', 'verify_tls', 'ca_bundle', 'timeout',
            'viewer_secret', 'viewer_token_lifetime'})
    _people_create = True

    @classmethod
    def create(cls, vlist):
        servers = super().create(vlist)
        cls.log(servers, 'create', ','.join(sorted(set().union(*vlist))))
        return servers

    @classmethod
    def write(cls, *args):
        super().write(*args)
        # trytond logs access-checked writes itself.
        if not Transaction().check_access:
            actions = iter(args)
            for servers, values in zip(actions, actions):
                settings = sorted(values.keys() & cls._people_fields)
                if settings:
                    cls.log(servers, 'write', ','.join(settings))

    @classmethod
    def delete(cls, servers):
        # trytond logs access-checked deletions itself.
        if not Transaction().check_access:
            cls.log(servers, 'delete')
        super().delete(servers)


class ModelLog(metaclass=PoolMeta):
    __name__ = 'ir.model.log'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        if ('create', "Created") not in cls.event.selection:
            cls.event.selection.append(('create', "Created"))
        # The names of the fields set at creation (never their values).
        cls.target.states = {
            **cls.target.states,
            'invisible': ~Eval('event').in_(
                ['write', 'button', 'wizard', 'transition', 'create']),
            }

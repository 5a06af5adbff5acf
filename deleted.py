# SPDX-License-Identifier: GPL-3.0-or-later
"""Studies and series deleted by Delete study / Delete series stay readable
as empty rows.

After any button, both clients read the records it was clicked on again
(the GTK client before it looks at the button's answer), and a deleted
record cannot be read: "records that don't exist", #ERROR rows.  So a read
that fails only on records whose deletion the model log holds answers an
empty row named "Deleted" for them; the lists' reload then leaves them out.
"""
from trytond.i18n import gettext
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice
from trytond.transaction import without_check_access

from .roles import from_client


class ReadAfterDelete:
    __slots__ = ()

    @classmethod
    def read(cls, ids, fields_names):
        try:
            return super().read(ids, fields_names)
        except AccessError:
            if not from_client():
                raise
            gone = cls._deleted_by_people(ids)
            if not gone:
                raise
        rows = super().read([i for i in ids if i not in gone], fields_names)
        by_id = {row['id']: row for row in rows}
        by_id.update({i: cls._deleted_row(i, fields_names) for i in gone})
        return [by_id[i] for i in ids if i in by_id]

    @classmethod
    def _deleted_by_people(cls, ids):
        "The ids among ids whose deletion is in the model log."
        Log = Pool().get('ir.model.log')
        existing = set()
        with without_check_access():
            for sub_ids in grouped_slice(ids):
                existing.update(r.id for r in cls.search([
                            ('id', 'in', list(sub_ids))]))
            missing = [i for i in ids if i not in existing]
            resources = ['%s,%s' % (cls.__name__, i) for i in missing]
            logged = set()
            for sub in grouped_slice(resources):
                logged.update(row['resource'] for row in Log.search_read([
                            ('resource', 'in', list(sub)),
                            ('event', '=', 'delete'),
                            ], fields_names=['resource']))
        if len(logged) != len(missing):
            return set()  # some other record is missing: a real error
        return set(missing)

    @classmethod
    def _deleted_row(cls, id_, fields_names):
        row = {'id': id_}
        for name in fields_names:
            field = cls._fields.get(name)
            if name == 'rec_name':
                row[name] = gettext('health_orthanc.msg_record_deleted')
            elif getattr(field, '_type', None) in {'one2many', 'many2many'}:
                row[name] = []
            elif name in {'_write', '_delete'}:
                row[name] = False
            else:
                row[name] = None
        return row


class Study(ReadAfterDelete, metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.study'


class Series(ReadAfterDelete, metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.study_series'

# SPDX-License-Identifier: GPL-3.0-or-later
"""With GNU Health's health_imaging_worklist activated (registered only
then): the item's StudyInstanceUID is the request's merge_id, the
scheduled station is the imaging test's AE title, and the request's
worklist_status follows the item (a "Canceled" status removes it)."""
from trytond.pool import PoolMeta


class ImagingTestRequest(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.request'

    @classmethod
    def new_worklist_uids(cls):
        """merge_id is the StudyInstanceUID: one per request, also when
        several are created at once (its default is computed once per
        create call, so they would share it)."""
        return {'merge_id': cls.default_merge_id()}

    @classmethod
    def copy(cls, requests, default=None):
        "A copied order is another order: its own merge_id (create)."
        default = dict(default or {})
        default.setdefault('merge_id', None)
        return super().copy(requests, default=default)

    @classmethod
    def worklist_read_fields(cls):
        return super().worklist_read_fields() + ['merge_id',
            'worklist_status', 'requested_test.aetitle']

    @classmethod
    def worklist_removal_reason(cls, row):
        if row['worklist_status'] == 'canceled':
            return 'order cancelled'
        return super().worklist_removal_reason(row)

    @classmethod
    def worklist_study_uid(cls, row):
        return row['merge_id'] or super().worklist_study_uid(row)

    @classmethod
    def worklist_station_ae(cls, row):
        return ((row['requested_test.'] or {}).get('aetitle')
            or super().worklist_station_ae(row))

    def study_uid_keys(self):
        return list(filter(None, [self.merge_id]
                + super().study_uid_keys()))

    @classmethod
    def study_uid_domain(cls, uids):
        return ['OR', ('merge_id', 'in', uids),
            super().study_uid_domain(uids)]

    @classmethod
    def done(cls, requests):
        super().done(requests)
        todo = [r for r in requests if r.worklist_status == 'todo']
        if todo:
            cls.write(todo, {'worklist_status': 'done'})

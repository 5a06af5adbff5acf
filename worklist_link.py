# SPDX-License-Identifier: GPL-3.0-or-later
"""With GNU Health's health_imaging_worklist activated (registered only
then): the item's StudyInstanceUID is the request's merge_id, the
scheduled station is the imaging test's AE title, and the request's
worklist_status follows the item (a "Canceled" status removes it)."""
from trytond.pool import PoolMeta


class ImagingTestRequest(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.request'

    def worklist_removal_reason(self):
        if self.worklist_status == 'canceled':
            return 'order cancelled'
        return super().worklist_removal_reason()

    def worklist_study_uid(self):
        return self.merge_id or super().worklist_study_uid()

    def worklist_station_ae(self):
        return (self.requested_test.aetitle
            or super().worklist_station_ae())

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

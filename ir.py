# SPDX-License-Identifier: GPL-3.0-or-later
"""The cron methods of the sync, selectable in ir.cron."""
from trytond.pool import PoolMeta


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.extend([
                ('gnuhealth.orthanc.config|cron_sync_changes',
                    "Synchronize new Orthanc studies"),
                ('gnuhealth.orthanc.config|cron_full_sync',
                    "Reconcile all studies with Orthanc"),
                ])

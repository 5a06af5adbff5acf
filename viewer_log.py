# SPDX-License-Identifier: GPL-3.0-or-later
"""Who opened which study in which viewer, and when.

Written only by the system when a viewer token is issued; read by imaging
administrators (security/viewer_access.xml), on the study and the patient.
"""
import datetime

from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.transaction import Transaction, without_check_access

VIEWERS = [
    ('webviewer', 'Orthanc Web Viewer'),
    ('stone', 'Stone Web Viewer'),
    ('ohif', 'OHIF viewer'),
    ]


class ViewerAccess(ModelSQL, ModelView):
    "Orthanc Viewer Opening"
    __name__ = 'gnuhealth.imaging_orthanc.viewer_access'

    opened_at = fields.DateTime('Opened at', required=True, readonly=True)
    user = fields.Many2One('res.user', 'User', required=True, readonly=True,
        ondelete='RESTRICT')
    viewer = fields.Selection(VIEWERS, 'Viewer', required=True,
        readonly=True)
    # The study and series may be deleted later: their UIDs stay here.
    study = fields.Many2One('gnuhealth.imaging_orthanc.study', 'Study',
        readonly=True, ondelete='SET NULL')
    study_instance_UID = fields.Char('Study UID', required=True,
        readonly=True)
    series = fields.Many2One('gnuhealth.imaging_orthanc.study_series',
        'Series', readonly=True, ondelete='SET NULL')
    patient = fields.Many2One('gnuhealth.patient', 'Patient', readonly=True,
        ondelete='SET NULL')
    server = fields.Many2One('gnuhealth.orthanc.config', 'Orthanc Server',
        readonly=True, ondelete='SET NULL')
    expires_at = fields.DateTime('Token expires at', readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.study, Index.Equality())),
                Index(t, (t.patient, Index.Equality())),
                })
        cls._order = [('opened_at', 'DESC'), ('id', 'DESC')]

    @classmethod
    def record(cls, records, viewer, lifetime):
        """Log the opening of each study or series by the current user.

        Runs without access checks: the user who opens a viewer may not
        write this log (nobody may over RPC).
        """
        now = datetime.datetime.now()
        user = Transaction().user
        values = []
        for record in records:
            series = record if record.__name__.endswith('study_series') else None
            study = series.study if series else record
            values.append({
                    'opened_at': now,
                    'user': user,
                    'viewer': viewer,
                    'study': study.id,
                    'study_instance_UID': study.study_instance_UID,
                    'series': series.id if series else None,
                    'patient': study.patient.id if study.patient else None,
                    'server': study.server.id,
                    'expires_at': now + datetime.timedelta(seconds=lifetime),
                    })
        with without_check_access():
            return cls.create(values)

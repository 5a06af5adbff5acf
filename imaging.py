# SPDX-License-Identifier: GPL-3.0-or-later
"""Orthanc studies where clinicians look: patient, imaging request, result."""
from trytond.model import fields
from trytond.pool import PoolMeta
from trytond.transaction import without_check_access

from .study import search_any
from .sync import link_results


class Patient(metaclass=PoolMeta):
    __name__ = 'gnuhealth.patient'

    orthanc_studies = fields.One2Many('gnuhealth.imaging_orthanc.study',
        'patient', 'Orthanc studies', readonly=True)
    # GNU Health 4.x's Orthanc patients (see legacy.py).
    orthanc_patients = fields.One2Many('gnuhealth.orthanc.patient',
        'patient', 'Orthanc patients (4.x)', readonly=True)


class ImagingTestRequest(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.request'

    orthanc_studies = fields.One2Many('gnuhealth.imaging_orthanc.study',
        'imaging_request', 'Orthanc studies', readonly=True)

    def get_rec_name(self, name):
        # GNU Health names a request after its doctor only: "(House) //".
        parts = [self.request, self.requested_test.rec_name
            if self.requested_test else None,
            self.date.date().isoformat() if self.date else None]
        text = ' - '.join(p for p in parts if p)
        return '**Urgent** ' + text if self.urgent else text

    @classmethod
    def search_rec_name(cls, name, clause):
        return search_any(clause, ['request', 'requested_test.name',
                'patient'])


class ImagingTestResult(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.result'

    orthanc_studies = fields.One2Many('gnuhealth.imaging_orthanc.study',
        'imaging_test', 'Orthanc studies', readonly=True)
    # GNU Health 4.x's Orthanc studies (see legacy.py).
    studies = fields.One2Many('gnuhealth.orthanc.study', 'imaging_test',
        'Orthanc studies (4.x)', readonly=True)

    @classmethod
    def create(cls, vlist):
        results = super().create(vlist)
        # A study may have arrived before its result was written: the
        # system links it (the user may not write the mirror).
        with without_check_access():
            link_results(results)
        return results

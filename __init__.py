# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.pool import Pool

from . import imaging, ir, server, study, sync


def register():
    Pool.register(
        server.ServerConfig,
        server.AddOrthancInitData,
        server.AddOrthancStatus,
        study.PatientOrthancStudy,
        study.StudySeries,
        study.SeriesInstances,
        sync.SyncServer,
        sync.SyncStudy,
        sync.GetNewStudiesStart,
        sync.FullSynchronizeStart,
        sync.SyncResult,
        imaging.Patient,
        imaging.ImagingTestRequest,
        imaging.ImagingTestResult,
        ir.View,
        ir.Cron,
        module='health_orthanc', type_='model')
    Pool.register(
        server.ConnectNewOrthancServer,
        sync.GetNewStudies,
        sync.FullSynchronize,
        module='health_orthanc', type_='wizard')

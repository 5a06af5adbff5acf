# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.pool import Pool

from . import (
    clinical, deleted, imaging, ir, legacy, problems, roles, server, stream,
    study, thumbnail, upload, viewer, viewer_log)


def register():
    Pool.register(
        server.ServerConfig,
        server.AddOrthancInitData,
        server.AddOrthancStatus,
        study.PatientOrthancStudy,
        study.StudySeries,
        study.SeriesInstances,
        problems.SyncProblem,
        problems.ProblemServer,
        problems.ProblemStudy,
        server.SyncStart,
        server.SyncResult,
        imaging.Patient,
        imaging.ImagingTestRequest,
        imaging.ImagingTestResult,
        upload.UploadImageDataStart,
        upload.UploadImageDataResult,
        stream.UploadFile,
        ir.View,
        ir.Cron,
        clinical.LinkPatientStart,
        clinical.LinkPatientConfirm,
        legacy.OrthancPatient,
        legacy.OrthancStudy,
        roles.Study,
        roles.Series,
        roles.Instance,
        roles.Server,
        roles.ModelLog,
        viewer_log.ViewerAccess,
        viewer.ServerConfig,
        viewer.Study,
        viewer.Series,
        viewer.Patient,
        thumbnail.Study,
        thumbnail.Server,
        deleted.Study,
        deleted.Series,
        module='health_orthanc', type_='model')
    Pool.register(
        server.ConnectNewOrthancServer,
        server.GetNewStudies,
        server.FullSynchronize,
        upload.UploadImageData,
        clinical.AttachToImagingTest,
        clinical.LinkPatient,
        *roles.role_checked_wizards(),
        thumbnail.GetNewStudies,
        thumbnail.FullSynchronize,
        thumbnail.UploadImageData,
        module='health_orthanc', type_='wizard')

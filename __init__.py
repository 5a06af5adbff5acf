# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.pool import Pool

from . import (
    clinical, imaging, ir, legacy, ondemand, problems, reconcile, roles, server,
    stream, study, upload, viewer, viewer_log, worklist, worklist_link)
from . import report_pacs


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
        reconcile.UploadFile,
        reconcile.Study,
        reconcile.ReconcileStart,
        reconcile.ReconcileConfirm,
        roles.ActionGroup,
        worklist.WorklistItem,
        worklist.ServerConfig,
        worklist.ImagingTestType,
        worklist.ImagingTestRequest,
        worklist.Party,
        worklist.Cron,
        report_pacs.ImagingTestResult,
        report_pacs.Instance,
        report_pacs.Cron,
        ondemand.Server,
        ondemand.Series,
        module='health_orthanc', type_='model')
    # Only with GNU Health's health_imaging_worklist activated.
    Pool.register(
        worklist_link.ImagingTestRequest,
        module='health_orthanc', type_='model',
        depends=['health_imaging_worklist'])
    Pool.register(
        server.ConnectNewOrthancServer,
        server.GetNewStudies,
        server.FullSynchronize,
        upload.UploadImageData,
        clinical.AttachToImagingTest,
        clinical.LinkPatient,
        reconcile.Reconcile,
        *roles.role_checked_wizards(),
        module='health_orthanc', type_='wizard')

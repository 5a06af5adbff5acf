# SPDX-License-Identifier: GPL-3.0-or-later
"""User-facing errors of health_orthanc (texts live in message.xml)."""
from trytond.exceptions import UserError
from trytond.model.exceptions import ValidationError


class OrthancServerError(UserError):
    "Orthanc could not be reached or refused a request."


class OrthancSyncError(OrthancServerError):
    "A synchronisation with Orthanc failed."


class OrthancSyncBusy(UserError):
    "Another synchronisation of the server is running."


class OrthancDeleteError(OrthancServerError):
    "Orthanc refused to delete a study or series."


class OrthancUploadError(UserError):
    "An upload could not be processed."


class ImagingLinkError(UserError):
    "A study or instance could not be linked to an imaging result."


class ServerURLError(ValidationError):
    "A server URL is not a valid http(s) URL."


class ViewerAccessError(UserError):
    "A viewer cannot be opened without the PACS password."


class ViewerSecretError(ValidationError):
    "The viewer secret of a server is unusable."

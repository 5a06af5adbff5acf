# SPDX-License-Identifier: GPL-3.0-or-later
"""User-facing errors of health_orthanc (texts live in message.xml), and
the translation of the adapter's errors into them."""
from contextlib import contextmanager

from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model.exceptions import ValidationError

from . import orthanc


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


# Most specific first: Timeout and TLSFailure are kinds of network failure.
_REASONS = [
    (orthanc.Unauthorized, 'msg_reason_unauthorized'),
    (orthanc.DeadlineExceeded, 'msg_reason_deadline'),
    (orthanc.TooLarge, 'msg_reason_too_large'),
    (orthanc.Timeout, 'msg_reason_timeout'),
    (orthanc.TLSFailure, 'msg_reason_tls'),
    (orthanc.Unreachable, 'msg_reason_unreachable'),
    (orthanc.NotOrthanc, 'msg_reason_not_orthanc'),
    (orthanc.NotFound, 'msg_reason_not_found'),
    (orthanc.Rejected, 'msg_reason_rejected'),
    ]


def describe_error(exc):
    "A translated sentence for an adapter error, free of credentials."
    detail = orthanc.redact(exc.reason or '')
    for error_class, message in _REASONS:
        if isinstance(exc, error_class):
            return gettext('health_orthanc.' + message,
                status=exc.status or '', detail=detail,
                **exc.message_values)
    return gettext('health_orthanc.msg_reason_other', detail=detail)


@contextmanager
def orthanc_errors(label, message='msg_server_error',
        error=OrthancServerError, **values):
    "Turn the adapter's errors into a UserError naming the server."
    try:
        yield
    except orthanc.OrthancError as exc:
        raise error(gettext('health_orthanc.' + message,
                server=label, reason=describe_error(exc), **values)) from exc

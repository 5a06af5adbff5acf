# SPDX-License-Identifier: GPL-3.0-or-later
"""Buttons shown only to the roles that may click them.

The groups of ir.model.button-res.group are what the server enforces; a
button of a view is then only greyed out for the others.  These states hide
it instead, from the groups the client has in its context (the user's own
groups, not their parents: hence both groups for imaging users).
"""
from functools import reduce
from operator import or_

from trytond.pyson import Eval, Id

ADMIN = 'group_imaging_orthanc_admin'
IMAGING = 'group_imaging_orthanc'


def hidden_unless(*groups):
    "PYSON: true unless the user is in one of groups (XML ids)."
    user_groups = Eval('context', {}).get('groups', [])
    return ~reduce(or_, (Id('health_orthanc', g).in_(user_groups)
            for g in groups))


def admin_only():
    return hidden_unless(ADMIN)


def imaging_only():
    return hidden_unless(IMAGING, ADMIN)

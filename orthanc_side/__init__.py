# SPDX-License-Identifier: GPL-3.0-or-later
"""Code that runs inside Orthanc (its Python plugin), next to the format of
the viewer tokens that GNU Health issues and the script checks.

Nothing here imports trytond: the folder is copied as is to the Orthanc
host.
"""

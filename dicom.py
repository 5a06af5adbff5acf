# SPDX-License-Identifier: GPL-3.0-or-later
"""DICOM values as Orthanc's JSON gives them (MainDicomTags), parsed into
Python values for the mirror's rows.

No HTTP and no Tryton here: the adapter (orthanc.py) returns Orthanc's
answers; sync.py turns them into row values with these functions.
"""
import datetime

__all__ = ['person_name', 'dicom_date', 'dicom_int', 'clean']


def clean(value):
    "Orthanc's text for a tag, None when empty; no NUL (PostgreSQL refuses)."
    if value is None:
        return None
    value = str(value).replace('\x00', '').strip()
    return value or None


def person_name(value):
    """Render a DICOM PN as 'FAMILY, GIVEN MIDDLE'.

    Only the first non-empty component group is used: the ideographic and
    phonetic groups (after '=') repeat the same name in other scripts.
    """
    if not value:
        return ''
    groups = [g for g in str(value).split('=') if g.strip('^ ')]
    if not groups:
        return ''
    parts = [p.strip() for p in groups[0].split('^')] + [''] * 5
    family, given, middle, prefix, suffix = parts[:5]
    rest = ' '.join(p for p in (prefix, given, middle, suffix) if p)
    return ', '.join(p for p in (family, rest) if p)


def dicom_date(value):
    "Parse a DA value ('YYYYMMDD', also 'YYYY.MM.DD'); None if unusable."
    if not value:
        return None
    text = str(value).strip().replace('.', '').replace('-', '')
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def dicom_int(value):
    "Parse an IS value leniently ('3.0' -> 3, ' 7 ' -> 7); None if unusable."
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value).split('\\')[0].strip()  # first value of a multi-value
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    if number != number or number in (float('inf'), float('-inf')):
        return None
    return int(number) if number.is_integer() else None

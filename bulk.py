# SPDX-License-Identifier: GPL-3.0-or-later
"""Bulk creation of mirror rows (studies, series, instances).

The ORM's create() checks each new record after inserting it (it reads
the records back to validate them) and, on SQLite, inserts one row per
statement to learn its id.  For the mirror, which the sync writes in
batches of thousands of rows, this module makes the same checks on the
values of the whole batch (required values, sizes, uniqueness of the
Orthanc ID per server, create user and date) and inserts them with
multi-row INSERTs.  See the README (Bulk write path) for the figures.
On PostgreSQL the INSERTs return the new ids and the table's unique
constraint checks the Orthanc IDs; SQLite, without the constraint, has
them checked and the ids read with one indexed SELECT per slice.

Only the system's own calls come here: a call checked for access (from a
client) goes to create(), which enforces the roles (roles.py).
"""
from sql import Column
from sql.functions import CurrentTimestamp

from trytond import backend
from trytond.i18n import gettext
from trytond.model.exceptions import (
    RequiredValidationError, SizeValidationError, SQLConstraintError)
from trytond.pool import Pool
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from .roles import from_client

INSERT_ROWS = 500  # rows per INSERT: under SQLite's 32,766 parameters


def bulk_create(Model, vlist, records=True):
    """Create the records of vlist (each with server and orthanc_UID);
    the records in the order of vlist, or their ids if not records
    (instantiating thousands of records costs as much as inserting them)."""
    if not vlist:
        return []
    if from_client() or not bulk_allowed(Model):
        created = Model.create(vlist)
        return created if records else [r.id for r in created]
    names, rows = checked_rows(Model, vlist)
    if backend.name == 'sqlite':
        insert_rows(Model, names, rows)
        ids = ids_by_uid(Model, rows)
    else:
        ids = insert_returning_ids(Model, names, rows)
    check_unique(Model, rows, ids)
    transaction = Transaction()
    transaction.create_records[Model.__name__].update(ids.values())
    # Records read before (e.g. a parent's children) may be stale.
    transaction.counter += 1
    created = [ids[(v['server'], v['orthanc_UID'])] for v in vlist]
    return Model.browse(created) if records else created


def insert_rows_checked(Model, vlist):
    """Create the rows of vlist with the checks of bulk_create, without
    reading them back (a log the system writes, read later by others);
    the ORM's create where this path does not apply."""
    if not vlist:
        return
    if from_client() or not bulk_allowed(Model):
        Model.create(vlist)
        return
    insert_rows(Model, *checked_rows(Model, vlist))
    Transaction().counter += 1


def checked_rows(Model, vlist):
    """(column names, rows): vlist completed with the defaults of the
    columns it does not give, checked (required values, sizes)."""
    defaults = complete_defaults(Model, sorted(set().union(*vlist)))
    rows = [dict(defaults, **v) for v in vlist]
    columns = column_fields(Model)
    names = sorted(n for n in rows[0] if n in columns)
    check_values(Model, names, rows)
    return names, rows


def bulk_allowed(Model):
    "What the ORM would do on create that this path does not: fall back."
    Trigger = Pool().get('ir.trigger')
    return not (Model._history or Model._path_fields or Model._mptt_fields
        or Trigger.get_triggers(Model.__name__, 'create'))


def column_fields(Model):
    return {n: f for n, f in Model._fields.items()
        if not hasattr(f, 'set') and n not in {'id', 'create_uid',
            'create_date', 'write_uid', 'write_date'}}


def complete_defaults(Model, names):
    "The default values of the columns vlist does not give, once."
    missing = [n for n in column_fields(Model) if n not in names]
    return Model._clean_defaults(
        Model.default_get(missing, with_rec_name=False)) if missing else {}


def check_values(Model, names, rows):
    "Required values and sizes, column by column for the whole batch."
    for name in names:
        field = Model._fields[name]
        required = field.required or field.states.get('required') is True
        size = getattr(field, 'size', None)
        if required and any(r.get(name) in (None, '') for r in rows):
            raise RequiredValidationError(gettext(
                    'ir.msg_required_validation', **Model.__names__(name)))
        if isinstance(size, int):
            for row in rows:
                if len(row.get(name) or '') > size >= 0:
                    raise SizeValidationError(gettext(
                            'ir.msg_size_validation', value=row[name],
                            size=len(row[name]), max_size=size,
                            **Model.__names__(name)))


def insert_rows(Model, names, rows, returning=None):
    """Multi-row INSERTs with the create user and date; the rows that
    returning (columns) asks for."""
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    table = Model.__table__()
    formats = [(n, formatter(Model._fields[n])) for n in names]
    columns = [table.create_uid, table.create_date] + [
        Column(table, n) for n in names]
    head = [transaction.user, CurrentTimestamp()]
    returned = []
    for batch in grouped_slice(rows, INSERT_ROWS):
        cursor.execute(*table.insert(columns, [
                    head + [f(r.get(n)) for n, f in formats]
                    for r in batch],
                returning=returning and [Column(table, c)
                    for c in returning]))
        if returning:
            returned.extend(cursor)
    return returned


def insert_returning_ids(Model, names, rows):
    """PostgreSQL: the INSERTs return the ids by (server, Orthanc ID), with
    no SELECT; the unique constraint refuses a duplicate (measured: the
    INSERT is most of a first sync's database time)."""
    try:
        returned = insert_rows(Model, names, rows,
            returning=['server', 'orthanc_UID', 'id'])
    except backend.DatabaseIntegrityError as exc:
        if getattr(exc, 'pgcode', None) == UNIQUE_VIOLATION:
            # The refused INSERT aborted the transaction: the message is
            # read in another, as the ORM does.
            with Transaction().new_transaction():
                message = gettext(Model._unique_message)
            raise SQLConstraintError(message) from exc
        raise
    return {(server, uid): id_ for server, uid, id_ in returned}


UNIQUE_VIOLATION = '23505'  # PostgreSQL's SQLSTATE


# Values the database takes as they are, by field type (the sync's values
# are already clean: no surrounding spaces, ids as int).
PLAIN = {'char': str, 'text': str, 'integer': int, 'many2one': int,
    'boolean': bool}


def formatter(field):
    """field.sql_format, skipped for the plain values it returns as they
    are (a third of the insert time of the sync's rows)."""
    plain = PLAIN.get(field._type)

    def format_(value):
        if value is None or (type(value) is plain
                and (plain is not str or value == value.strip())):
            return value
        return field.sql_format(value)
    return format_


def ids_by_uid(Model, rows):
    "The ids of the rows: one indexed SELECT per slice of Orthanc IDs."
    cursor = Transaction().connection.cursor()
    table = Model.__table__()
    ids = {}
    for server in {r['server'] for r in rows}:
        uids = [r['orthanc_UID'] for r in rows if r['server'] == server]
        for sub in grouped_slice(uids):
            cursor.execute(*table.select(table.orthanc_UID, table.id,
                    where=(table.server == server)
                    & table.orthanc_UID.in_(list(sub))))
            for uid, id_ in cursor:
                if (server, uid) in ids:
                    raise_not_unique(Model)
                ids[(server, uid)] = id_
    return ids


def check_unique(Model, rows, ids):
    """One row per server and Orthanc ID (PostgreSQL's constraint says it
    too; SQLite has none): a duplicate inside the batch or with a stored
    row leaves fewer ids than rows."""
    if len(ids) != len(rows):
        raise_not_unique(Model)


def raise_not_unique(Model):
    raise SQLConstraintError(gettext(Model._unique_message))


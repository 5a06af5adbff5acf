# SPDX-License-Identifier: GPL-3.0-or-later
"""What health_orthanc stores in a database, as JSON on stdout.

Run by the earlier module's Python before the upgrade and by this module's
after it: python upgrade_snapshot.py <trytond.conf> <database>.  It holds
every row of the tables of gnuhealth-orthanc 5.0.4's models, the module's
XML ids, the values of 5.0.4's field names read through the ORM, and the
records that would be orphans (views of unknown models, menus of missing
actions, XML ids of missing records).
"""
import datetime
import decimal
import json
import sys

from trytond.config import config

CONF, DB = sys.argv[1:3]
config.update_etc(CONF)

from sql import Literal, Table  # noqa: E402
from sql.aggregate import Count  # noqa: E402
from trytond.pool import Pool  # noqa: E402
from trytond.transaction import Transaction  # noqa: E402

TABLES = {
    'gnuhealth.orthanc.config': 'gnuhealth_orthanc_config',
    'gnuhealth.imaging_orthanc.study': 'gnuhealth_imaging_orthanc_study',
    'gnuhealth.imaging_orthanc.study_series':
        'gnuhealth_imaging_orthanc_study_series',
    'gnuhealth.imaging_orthanc.series_instances':
        'gnuhealth_imaging_orthanc_series_instances',
    'gnuhealth.orthanc.patient': 'gnuhealth_orthanc_patient',
    'gnuhealth.orthanc.study': 'gnuhealth_orthanc_study',
    }
# 5.0.4's field names whose values are computed, read through the ORM.
FUNCTION_NAMES = {
    'gnuhealth.orthanc.config': ['link', 'link_base_url'],
    'gnuhealth.imaging_orthanc.study': ['link_base_url',
        'gnuhealth_patient_name'],
    'gnuhealth.orthanc.patient': ['link'],
    'gnuhealth.orthanc.study': ['ohif_viewer_link', 'stone_viewer_link',
        'orthanc_explorer_link'],
    'gnuhealth.patient': ['orthanc_patients', 'orthanc_studies'],
    'gnuhealth.imaging.test.result': ['studies', 'orthanc_studies'],
    }


def plain(value):
    if isinstance(value, (datetime.date, datetime.datetime,
                datetime.time, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return 'bytes:%d' % len(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def rows(cursor, table):
    sql_table = Table(table)
    cursor.execute(*sql_table.select(order_by=[sql_table.id]))
    names = [d[0] for d in cursor.description]
    return [{n: plain(v) for n, v in zip(names, row)} for row in cursor]


def function_values(pool):
    values = {}
    for model, names in FUNCTION_NAMES.items():
        Model = pool.get(model)
        records = Model.search([], order=[('id', 'ASC')])
        if model == 'gnuhealth.patient':
            records = [r for r in records
                if r.orthanc_patients or r.orthanc_studies]
        values[model] = {str(r['id']): {n: plain(r[n]) for n in names}
            for r in Model.read([r.id for r in records], names)}
    return values


def instance_image(pool):
    "The image of the first CT instance, read as a form reads it."
    Instance = pool.get('gnuhealth.imaging_orthanc.series_instances')
    for instance in Instance.search([], order=[('id', 'ASC')]):
        if instance.series.modality != 'CT':
            continue
        value, = Instance.read([instance.id], ['image'])
        image = value['image'] or b''
        return {'id': instance.id, 'png': image.startswith(b'\x89PNG'),
            'size': len(image)}


def xml_ids(cursor):
    data = Table('ir_model_data')
    cursor.execute(*data.select(data.fs_id, data.model, data.db_id,
            where=data.module == 'health_orthanc', order_by=[data.fs_id]))
    return {fs_id: [model, db_id] for fs_id, model, db_id in cursor}


def translations(cursor):
    "Number of the module's translations by language."
    translation = Table('ir_translation')
    cursor.execute(*translation.select(translation.lang,
            Count(Literal('*')),
            where=translation.module == 'health_orthanc',
            group_by=[translation.lang]))
    return dict(cursor)


def orphans(pool, cursor):
    "Records left pointing at nothing; every list should be empty."
    found = {}
    models = {m.model for m in pool.get('ir.model').search([])}
    View = pool.get('ir.ui.view')
    found['views of unknown models'] = [v.id for v in View.search([])
        if v.model and v.model not in models]
    found['views inheriting a missing view'] = [v.id for v in View.search([
                ('inherit', '!=', None)]) if not v.inherit]
    Menu = pool.get('ir.ui.menu')
    found['menus leading nowhere'] = [m.complete_name
        for m in Menu.search([]) if not m.action and not m.childs]
    ActWindow = pool.get('ir.action.act_window')
    found['actions of unknown models'] = [a.id for a in ActWindow.search([])
        if a.res_model and a.res_model not in models]
    ActWizard = pool.get('ir.action.wizard')
    found['wizards not registered'] = []
    for action in ActWizard.search([]):
        try:
            pool.get(action.wiz_name, type='wizard')
        except KeyError:
            found['wizards not registered'].append(action.wiz_name)
    found['xml ids of missing records'] = []
    for fs_id, (model, db_id) in xml_ids(cursor).items():
        table = Table(pool.get(model)._table)
        cursor.execute(*table.select(table.id, where=table.id == db_id))
        if not cursor.fetchone():
            found['xml ids of missing records'].append(fs_id)
    registered = {name for name, _ in pool.iterobject()}
    found['models not registered'] = sorted(
        m.model for m in pool.get('ir.model').search([
                ('module', '=', 'health_orthanc')])
        if m.model not in registered)
    return found


def main():
    pool = Pool(DB)
    pool.init()
    with Transaction().start(DB, 0, readonly=True) as transaction:
        cursor = transaction.connection.cursor()
        snapshot = {
            'tables': {model: rows(cursor, table)
                for model, table in TABLES.items()},
            'functions': function_values(pool),
            'image': instance_image(pool),
            'xml_ids': xml_ids(cursor),
            'orphans': orphans(pool, cursor),
            'translations': translations(cursor),
            }
    json.dump(snapshot, sys.stdout, indent=1, sort_keys=True)


if __name__ == '__main__':
    main()

# SPDX-License-Identifier: GPL-3.0-or-later
"The bulk write path of the mirror makes the ORM's checks for the batch."
import unittest

from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction


def tree(n, **study_tags):
    from trytond.modules.health_orthanc import orthanc
    study = {'ID': 'study-%d' % n, 'LastUpdate': '20260101T000000',
        'MainDicomTags': dict({'StudyInstanceUID': '1.2.%d' % n,
                'StudyDate': '20260101', 'StudyDescription': 'CT %d' % n},
            **study_tags),
        'PatientMainDicomTags': {'PatientName': 'DOE^JOHN',
            'PatientID': 'P%d' % n}}
    series = [{'ID': 'series-%d' % n, 'ParentStudy': study['ID'],
            'MainDicomTags': {'Modality': 'CT', 'SeriesNumber': '1',
                'SeriesInstanceUID': '1.2.%d.1' % n}}]
    instances = [{'ID': 'instance-%d-%d' % (n, i),
            'ParentSeries': series[0]['ID'],
            'MainDicomTags': {'SOPInstanceUID': '1.2.%d.1.%d' % (n, i),
                'InstanceNumber': str(i)}} for i in range(3)]
    return orthanc.StudyTree(study, series, instances)


class BulkCreateTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')

    def server(self, port=1):
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{'label': 'Bulk %d' % port,
                    'domain': 'http://127.0.0.1:%d' % port}])
        return server

    def models(self):
        pool = Pool()
        return (pool.get('gnuhealth.imaging_orthanc.study'),
            pool.get('gnuhealth.imaging_orthanc.study_series'),
            pool.get('gnuhealth.imaging_orthanc.series_instances'))

    @with_transaction()
    def test_same_rows_as_the_orm(self):
        "Values, defaults, create user and date, order: as create() does."
        from trytond.modules.health_orthanc import bulk, sync
        Study, Series, Instance = self.models()
        server = self.server()
        by_orm = Study.create([sync.study_values(server, tree(1))])
        by_bulk = bulk.bulk_create(Study,
            [sync.study_values(server, tree(n)) for n in (3, 2)])
        self.assertEqual([s.orthanc_UID for s in by_bulk],
            ['study-3', 'study-2'])
        skip = {'id', 'create_date', 'orthanc_UID', 'study_instance_UID',
            'merge_id', 'description', 'patient_id', 'rec_name'}
        names = [n for n, f in Study._fields.items()
            if n not in skip and not hasattr(f, 'set')]
        orm, = Study.read([by_orm[0].id], names)
        for record in Study.read([s.id for s in by_bulk], names):
            orm['id'] = record['id']
            self.assertEqual(record, orm)
        for study in by_bulk:
            self.assertEqual(study.create_uid.id, Transaction().user)
            self.assertTrue(study.create_date)
        series = bulk.bulk_create(Series, [sync.series_values(server,
                    by_bulk[0], tree(3).series[0], 3)])
        instances = bulk.bulk_create(Instance, [sync.instance_values(server,
                    series[0], i) for i in tree(3).instances])
        self.assertEqual(by_bulk[0].series, tuple(series))
        self.assertEqual(series[0].instances, tuple(instances))

    @with_transaction()
    def test_required_value_refused(self):
        from trytond.model.exceptions import RequiredValidationError
        from trytond.modules.health_orthanc import bulk, sync
        Study, _, _ = self.models()
        values = sync.study_values(self.server(), tree(1))
        values['orthanc_UID'] = None
        with self.assertRaises(RequiredValidationError):
            bulk.bulk_create(Study, [values])

    @with_transaction()
    def test_too_long_value_refused(self):
        from trytond.model.exceptions import SizeValidationError
        from trytond.modules.health_orthanc import bulk, sync
        Study, _, _ = self.models()
        field = Study._fields['patient_name']
        size, field.size = field.size, 3
        try:
            with self.assertRaises(SizeValidationError):
                bulk.bulk_create(Study,
                    [sync.study_values(self.server(), tree(1))])
        finally:
            field.size = size

    @with_transaction()
    def test_orthanc_id_unique_per_server(self):
        "A duplicate in the batch or with a stored row is refused."
        from trytond.modules.health_orthanc import bulk, sync
        Study, _, _ = self.models()
        server, other = self.server(), self.server(2)
        bulk.bulk_create(Study, [sync.study_values(server, tree(1)),
                sync.study_values(other, tree(1))])
        for batch in ([tree(2), tree(2)], [tree(1)]):
            with self.subTest(batch=[t.study['ID'] for t in batch]):
                with self.assertRaises(sync.REFUSALS):
                    with sync.savepoint('bulk_test'):
                        bulk.bulk_create(Study,
                            [sync.study_values(server, t) for t in batch])

    @with_transaction()
    def test_client_calls_go_through_create(self):
        "An access-checked call is refused by the roles, as create() does."
        from trytond.exceptions import UserError
        from trytond.modules.health_orthanc import bulk, sync
        Study, _, _ = self.models()
        values = sync.study_values(self.server(), tree(1))
        transaction = Transaction()
        with transaction.set_user(1), transaction.set_context(
                _check_access=True):
            with self.assertRaises(UserError):
                bulk.bulk_create(Study, [values])

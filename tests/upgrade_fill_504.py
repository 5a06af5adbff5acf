# SPDX-License-Identifier: GPL-3.0-or-later
"""Fill a database of gnuhealth-orthanc 5.0.4 as a hospital's would be.

Run by the Python of the virtual environment holding 5.0.4 (not by this
module's): python upgrade_fill_504.py <trytond.conf> <database> <orthanc URL>
<user> <password>.  The server is added with 5.0.4's own wizard and the
studies come from 5.0.4's own incremental and full synchronisations against
the real Orthanc; people's work (notes, links by hand) and the rows of the
GNU Health 4.x models that 5.0.4 still carries are written with its ORM.
"""
import datetime
import sys

from trytond.config import config

CONF, DB, URL, USER, PASSWORD = sys.argv[1:6]
config.update_etc(CONF)

from pyorthanc import Orthanc  # noqa: E402
from trytond.pool import Pool  # noqa: E402
from trytond.transaction import Transaction  # noqa: E402

PUID = 'HOSP00001'  # the DICOM PatientID of the studies of this patient
PROXY = 'https://pacs.example.org/orthanc/'

pool = Pool(DB)
pool.init()


def person(Party, name, lastname, **values):
    party, = Party.create([{'name': name, 'lastname': lastname,
                'is_person': True, 'gender': 'f', 'fed_country': None,
                **values}])
    return party


def clinical_records():
    "A patient, a doctor and an imaging result of that patient."
    Party = pool.get('party.party')
    Patient = pool.get('gnuhealth.patient')
    Professional = pool.get('gnuhealth.healthprofessional')
    Uom = pool.get('product.uom')
    Template = pool.get('product.template')
    Product = pool.get('product.product')
    TestType = pool.get('gnuhealth.imaging.test.type')
    Test = pool.get('gnuhealth.imaging.test')
    Request = pool.get('gnuhealth.imaging.test.request')
    Result = pool.get('gnuhealth.imaging.test.result')
    party = person(Party, 'Ann', 'Lee', is_patient=True, ref=PUID)
    patient = (Patient.search([('party', '=', party.id)])
        or Patient.create([{'party': party.id}]))[0]
    doctor_party = person(Party, 'Gregory', 'House', is_healthprof=True,
        is_patient=False)
    doctor, = Professional.create([{'party': doctor_party.id}])
    unit, = Uom.search([('name', '=', 'Unit')])
    template, = Template.create([{'name': 'CT head', 'type': 'service',
                'default_uom': unit.id}])
    product, = Product.create([{'template': template.id}])
    test_type, = TestType.create([{'code': 'CT', 'name': 'CT'}])
    test, = Test.create([{'code': 'CTHEAD', 'name': 'CT head',
                'test_type': test_type.id, 'product': product.id}])
    now = datetime.datetime(2024, 1, 2, 10, 0)
    request, = Request.create([{'patient': patient.id, 'date': now,
                'requested_test': test.id, 'doctor': doctor.id}])
    result, = Result.create([{'patient': patient.id, 'date': now,
                'requested_test': test.id, 'doctor': doctor.id,
                'request': request.id}])
    return patient, result


def add_server():
    "5.0.4's Add New Server wizard, against the real Orthanc."
    Wizard = pool.get('gnuhealth.imaging_orthanc.wizard.orthanc_new_connect',
        type='wizard')
    session_id, _, _ = Wizard.create()
    Wizard.execute(session_id, {'start': {
                'label': 'Main PACS', 'domain': URL, 'proxy_domain': None,
                'user': USER, 'password': PASSWORD}}, 'connect')
    Wizard.delete(session_id)
    Server = pool.get('gnuhealth.orthanc.config')
    server, = Server.search([('domain', '=', URL)])
    return server


def people_work(patient, result):
    "What users write on the mirror by hand."
    Server = pool.get('gnuhealth.orthanc.config')
    Study = pool.get('gnuhealth.imaging_orthanc.study')
    Series = pool.get('gnuhealth.imaging_orthanc.study_series')
    Server.write(Server.search([]), {'proxy_domain': PROXY})
    studies = Study.search([], order=[('study_instance_UID', 'ASC')])
    for number, study in enumerate(studies):
        Study.write([study], {'notes': 'study note %d' % number,
                'merge_comment': 'comment %d' % number})
    unlinked = [s for s in studies if not s.patient]
    # A study linked by hand to the patient and the result.
    Study.write(unlinked[:1], {'patient': patient.id,
            'imaging_test': result.id})
    for number, series in enumerate(Series.search([],
                order=[('series_UID', 'ASC')])):
        Series.write([series], {'notes': 'series note %d' % number})


def gnuhealth_4_rows(server, patient, result):
    """Rows of the GNU Health 4.x models, which 5.0.4 still carries (its own
    create_patients for patients; studies as 4.x stored them)."""
    OldPatient = pool.get('gnuhealth.orthanc.patient')
    OldStudy = pool.get('gnuhealth.orthanc.study')
    client = Orthanc(url=URL, username=USER, password=PASSWORD)
    OldPatient.create_patients(client.get_patients({'expand': True}),
        server)
    by_uuid = {p.uuid: p for p in OldPatient.search([])}
    for orthanc_patient in by_uuid.values():
        if orthanc_patient.ident != PUID:
            # Linked by hand in 4.x.
            OldPatient.write([orthanc_patient], {'patient': patient.id})
    values = []
    for study in client.get_studies({'expand': True}):
        tags = study['MainDicomTags']
        values.append({
                'uuid': study['ID'],
                'patient': by_uuid[study['ParentPatient']].id,
                'server': server.id,
                'description': tags.get('StudyDescription'),
                'date': datetime.datetime.strptime(
                    tags['StudyDate'], '%Y%m%d').date(),
                'ident': tags.get('StudyID'),
                'instance_uid': tags.get('StudyInstanceUID'),
                'requested_procedure_id': tags.get('RequestedProcedureID'),
                'institution': tags.get('InstitutionName'),
                'ref_phys': tags.get('ReferringPhysicianName'),
                'req_phys': tags.get('RequestingPhysician'),
                })
    values.sort(key=lambda v: v['instance_uid'])
    values[0]['imaging_test'] = result.id
    values[0]['merge_id'] = 'merge-4x'
    OldStudy.create(values)


def main():
    Study = pool.get('gnuhealth.imaging_orthanc.study')
    with Transaction().start(DB, 0) as transaction:
        patient, result = clinical_records()
        server = add_server()
        transaction.commit()
        Study.get_new_studies()
        transaction.commit()
        Study.full_synchronize()
        transaction.commit()
        people_work(patient, result)
        gnuhealth_4_rows(Pool().get('gnuhealth.orthanc.config')(server.id),
            patient, result)
        transaction.commit()


if __name__ == '__main__':
    main()

# SPDX-License-Identifier: GPL-3.0-or-later
"""Proteus helpers creating the GNU Health records scenarios and the demo
need: patients, health professionals, imaging tests, requests, results."""
import datetime
import os

from proteus import Model, Wizard


def create_patient(puid, lastname, name, gender='m', birth_date=None,
        alternative_ids=()):
    "A patient whose PUID (party ref) is puid."
    Party = Model.get('party.party')
    Patient = Model.get('gnuhealth.patient')
    party = Party(name=name, lastname=lastname, is_person=True,
        is_patient=True, gender=gender, ref=puid)
    if birth_date:
        party.dob = birth_date
    for code in alternative_ids:
        party.alternative_ids.new(code=code, alternative_id_type='other')
    party.save()
    # GNU Health creates the patient of a party marked is_patient.
    patients = Patient.find([('party', '=', party.id)])
    if patients:
        return patients[0]
    patient = Patient(party=party)
    patient.save()
    return patient


def create_health_professional(name='House', lastname='Gregory', user=None):
    """A health professional, optionally the one of a login user (GNU
    Health wants the logged-in user to be one to write requests and
    results)."""
    Party = Model.get('party.party')
    Professional = Model.get('gnuhealth.healthprofessional')
    # is_patient is on by default for people: a doctor is not a patient.
    party = Party(name=name, lastname=lastname, is_person=True,
        is_healthprof=True, is_patient=False, gender='m',
        internal_user=user)
    party.save()
    professionals = Professional.find([('party', '=', party.id)])
    if professionals:
        return professionals[0]
    professional = Professional(party=party)
    professional.save()
    return professional


def create_imaging_test(code='CTHEAD', name='CT head'):
    "An imaging test type, test and its product."
    Uom = Model.get('product.uom')
    Template = Model.get('product.template')
    TestType = Model.get('gnuhealth.imaging.test.type')
    Test = Model.get('gnuhealth.imaging.test')
    unit, = Uom.find([('name', '=', 'Unit')])
    template = Template(name=name, type='service', default_uom=unit)
    template.save()
    test_type = TestType(code=code[:2], name=name.split()[0])
    test_type.save()
    test = Test(code=code, name=name, test_type=test_type,
        product=template.products[0])
    test.save()
    return test


def create_request(patient, test, doctor):
    """A requested imaging test; its order code (request.request) is what a
    modality puts in the DICOM AccessionNumber."""
    Request = Model.get('gnuhealth.imaging.test.request')
    request = Request(patient=patient, requested_test=test, doctor=doctor,
        date=datetime.datetime.now())
    request.save()
    request.click('requested')
    return request


def create_result(request):
    "The result of a request, made as users do: with the request's wizard."
    Result = Model.get('gnuhealth.imaging.test.result')
    Wizard('wizard.generate.result', [request])
    result, = Result.find([('request', '=', request.id)])
    return result


def instance_mirroring():
    """The instance mirroring of the servers tests register: the scenario
    loader runs the scenarios that use instances in both modes."""
    return os.environ.get('HEALTH_ORTHANC_INSTANCE_MIRRORING', 'all')


def register_server(orthanc, label='PACS'):
    "A server record for a test OrthancServer, checked and validated."
    Server = Model.get('gnuhealth.orthanc.config')
    server = Server(label=label, domain=orthanc.url, user=orthanc.user,
        password=orthanc.password, instance_mirroring=instance_mirroring())
    server.save()
    server.click('check_connection')
    server.reload()
    return server


def open_series(series_ids=None):
    """Open series (all, by default) as a user does, one form at a time:
    reading a series' instances stores them on demand (no change with all
    instances mirrored)."""
    Series = Model.get('gnuhealth.imaging_orthanc.study_series')
    if series_ids is None:
        series_ids = [s.id for s in Series.find([])]
    for series_id in series_ids:
        Series.read([series_id], ['instances'], {})


def write_as_system(model_name, ids, values):
    """Write values on records as trytond's system (user 0, no access
    check), in this process: for scenarios that stand in for the sync or
    the connection check, the only writers of mirror and status fields."""
    from proteus.config import get_config
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(get_config().database_name, 0) as transaction:
        Model = Pool().get(model_name)
        Model.write(Model.browse(ids), values)
        transaction.commit()

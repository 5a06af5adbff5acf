# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.pool import PoolMeta

RNG_NS = {'ns': 'http://relaxng.org/ns/structure/1.0'}
UPLOAD_WIDGET = 'binary_dicom'


class View(metaclass=PoolMeta):
    """The upload form's widget allowed in form views.

    Needed: trytond checks every view against this schema, both when a view
    is stored and, in ModuleTestCase.test_view, as clients receive it (a
    widget set at run time in parse_view fails that check too), and the
    schema is one per view type.  So it is widened for forms only, by one
    value of the widget attribute.
    """
    __name__ = 'ir.ui.view'

    @classmethod
    def get_rng(cls, type_):
        rng = super().get_rng(type_)
        if type_ == 'form':
            add_widget(rng, UPLOAD_WIDGET)
        return rng


def add_widget(rng, name):
    "Allow widget=name in the view schema; adding it twice is harmless."
    choices = rng.xpath(
        '//ns:define/ns:optional/ns:attribute'
        '/ns:name[.="widget"]/following-sibling::ns:choice',
        namespaces=RNG_NS)
    for choice in choices:
        if not choice.xpath('ns:value[.=$name]', namespaces=RNG_NS,
                name=name):
            value = choice.makeelement(
                '{%s}value' % RNG_NS['ns'], nsmap=choice.nsmap)
            value.text = name
            choice.append(value)


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.extend([
                ('gnuhealth.orthanc.config|cron_sync_changes',
                    "Synchronize new Orthanc studies"),
                ('gnuhealth.orthanc.config|cron_full_sync',
                    "Reconcile all studies with Orthanc"),
                ('gnuhealth.imaging_orthanc.worklist_item|cron_retry',
                    "Deliver the worklist items not delivered yet"),
                ('gnuhealth.imaging.test.result|cron_retry_pacs_reports',
                    "Retry imaging reports for the PACS"),
                ])

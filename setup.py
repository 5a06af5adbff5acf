# SPDX-License-Identifier: GPL-3.0-or-later
"""Packaging: the repository root is the Tryton module health_orthanc."""
import configparser
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = 'health_orthanc'

config = configparser.ConfigParser()
config.read(os.path.join(HERE, 'tryton.cfg'))
info = dict(config.items('tryton'))

setup(
    name='gnuhealth-orthanc-integration',
    version=info['version'],
    description='GNU Health HIS 5.0: Orthanc PACS integration (health_orthanc)',
    license='GPL-3.0-or-later',
    python_requires='>=3.10',
    package_dir={'trytond.modules.%s' % MODULE: '.'},
    packages=[
        'trytond.modules.%s' % MODULE,
        'trytond.modules.%s.tests' % MODULE,
        # Also copied to the Orthanc host (viewer-access script).
        'trytond.modules.%s.orthanc_side' % MODULE,
        ],
    package_data={
        'trytond.modules.%s' % MODULE: [
            'tryton.cfg', '*.xml', 'view/*.xml', 'security/*.xml',
            'locale/*.po', 'icons/*.svg', 'custom.js'],
        'trytond.modules.%s.tests' % MODULE: ['*.rst', 'browser/*.mjs'],
        'trytond.modules.%s.orthanc_side' % MODULE: ['*.json'],
        },
    install_requires=[
        'trytond>=7.0,<7.1',
        'gnuhealth>=5.0,<5.1',
        'gnuhealth-imaging>=5.0,<5.1',
        'pyorthanc>=1.18,<2',
        'httpx>=0.27,<1',
        # Worklist files (.wl) of the Modality Worklist items.
        'pydicom>=3,<4',
        ],
    extras_require={
        'test': ['proteus>=7.0,<7.1', 'pydicom>=3,<4', 'pytest'],
        'postgresql': ['psycopg2-binary'],
        },
    entry_points={
        'trytond.modules': ['%s = trytond.modules.%s' % (MODULE, MODULE)],
        },
    zip_safe=False,
)

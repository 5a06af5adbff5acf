"""Run a real, throw-away Orthanc for tests and benchmarks.

The server listens on loopback only, on free ports, with its own
configuration and storage in a temporary folder, and basic authentication
on. Set ORTHANC_BINARY to use another executable than /usr/sbin/Orthanc and
ORTHANC_PLUGINS_DIR for another plugin folder.
"""
import atexit
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

import httpx

__all__ = ['OrthancServer', 'shared_server', 'upload_files', 'clear',
    'orthanc_available']

BINARY = os.environ.get('ORTHANC_BINARY', '/usr/sbin/Orthanc')
PLUGINS_DIR = os.environ.get('ORTHANC_PLUGINS_DIR',
    '/usr/share/orthanc/plugins')
PLUGIN_FILES = {
    'dicomweb': 'libOrthancDicomWeb.so',
    'webviewer': 'libOrthancWebViewer.so',
    'worklists': 'libModalityWorklists.so',
    'servefolders': 'libServeFolders.so',
    'python': 'libOrthancPython.so',
    'postgresql': 'libOrthancPostgreSQLIndex.so',
}
# The module's Orthanc-side script (Debian's orthanc-python runs it).
VIEWER_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(
            os.path.realpath(__file__))), 'orthanc_side', 'viewer_access.py')
START_TIMEOUT = 30

# Orthanc 1.10 answers 403 Forbidden when this filter returns false.
READONLY_DELETE_LUA = '''
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if method == 'DELETE' then
    return false
  end
  return true
end
'''


def postgresql_index(uri):
    "Orthanc's PostgreSQL plugin settings for a database URI."
    parts = urllib.parse.urlsplit(uri)
    return {
        'EnableIndex': True,
        'EnableStorage': False,
        'Host': parts.hostname or '127.0.0.1',
        'Port': parts.port or 5432,
        'Database': parts.path.lstrip('/'),
        'Username': parts.username or 'postgres',
        'Password': parts.password or '',
        'Lock': False,
        }


def orthanc_available():
    "True if the Orthanc executable is installed (tests skip otherwise)."
    return os.access(BINARY, os.X_OK)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _die_with_parent():
    # Linux only: Orthanc gets SIGTERM if the test process is killed
    # (atexit does not run on SIGKILL).
    os.setsid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class OrthancServer:

    def __init__(self, *, user='orthanc', password=None,
            plugins=('dicomweb', 'webviewer'), readonly_delete=False,
            workdir=None, parent=None, keep=False,
            name='health_orthanc tests', lua=None,
            viewer_secret=None, viewer_script=VIEWER_SCRIPT,
            dicom=False, worklists_folder=None, extra_config=None,
            index_database=None):
        self.user = user
        # Debian's orthanc-postgresql: Orthanc's index in this database of
        # the machine's PostgreSQL (a URI), as large archives run it.
        self.index_database = index_database
        # dicom: the DICOM server listens (C-FIND, C-STORE from dcmtk);
        # worklists_folder: the ModalityWorklists plugin serves it.
        self.dicom = dicom or bool(worklists_folder)
        self.worklists_folder = worklists_folder
        self.extra_config = dict(extra_config or {})
        # With a secret, Orthanc runs the viewer-access script as the README
        # configures it: no built-in authentication, the script decides.
        self.viewer_secret = viewer_secret
        self.viewer_script = viewer_script
        self.password = password or secrets.token_urlsafe(12)
        self.plugins = tuple(plugins)
        self.readonly_delete = readonly_delete
        self.lua = lua  # extra Lua source, e.g. a ReceivedInstanceFilter
        self.name = name
        self.keep = keep
        self._own_workdir = workdir is None
        self.parent = parent  # of the temporary folder made when no workdir
        self.workdir = workdir
        self.port = None
        self.dicom_port = None
        self.process = None
        self.pid = None

    # -- paths --

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    @property
    def storage(self):
        return os.path.join(self.workdir, 'storage')

    @property
    def log_path(self):
        return os.path.join(self.workdir, 'orthanc.log')

    @property
    def auth(self):
        return (self.user, self.password)

    # -- lifecycle --

    def start(self):
        if self.process is not None:
            return self
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix='orthanc-test-',
                dir=self.parent)
        os.makedirs(self.storage, exist_ok=True)
        if self.port is None:  # a restart keeps its ports
            self.port = free_port()
            self.dicom_port = free_port()
        config = self._write_config()
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen([BINARY, config],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.workdir, preexec_fn=self._preexec())
        self.pid = self.process.pid
        atexit.register(self._atexit)
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise
        return self

    def _preexec(self):
        if threading.current_thread() is threading.main_thread():
            return _die_with_parent
        # PDEATHSIG fires when the creating *thread* exits: not from others.
        return os.setsid

    def _write_config(self):
        config = {
            'Name': self.name,
            'StorageDirectory': self.storage,
            'IndexDirectory': self.storage,
            'HttpPort': self.port,
            # Orthanc 1.10 has no HttpBindAddress: it binds every interface
            # but refuses any client that is not on this host.
            'RemoteAccessAllowed': False,
            'AuthenticationEnabled': True,
            'RegisteredUsers': {self.user: self.password},
            'DicomServerEnabled': False,
            'DicomPort': self.dicom_port,
            'Plugins': [os.path.join(PLUGINS_DIR, PLUGIN_FILES[p])
                for p in self.plugins + (
                    ('python',) if self.viewer_secret else ()) + (
                    ('postgresql',) if self.index_database else ())],
            'StableAge': 2,
            'HttpTimeout': 10,
            'KeepAlive': True,
            'TcpNoDelay': True,
            'LimitFindResults': 0,
            'LimitFindInstances': 0,
            'SaveJobs': False,
            'StorageCompression': False,
            'WebViewer': {'CachePath': os.path.join(self.workdir, 'wvcache')},
        }
        if self.index_database:
            config['PostgreSQL'] = postgresql_index(self.index_database)
        if self.dicom:
            config.update({'DicomServerEnabled': True,
                    'DicomAlwaysAllowFindWorklist': True,
                    'DicomAlwaysAllowStore': True})
        if self.worklists_folder:
            config['Plugins'].append(os.path.join(PLUGINS_DIR,
                    PLUGIN_FILES['worklists']))
            config['Worklists'] = {'Enable': True,
                'Database': self.worklists_folder}
        config.update(self.extra_config)
        if self.viewer_secret:
            config.update({
                    'AuthenticationEnabled': False,
                    'PythonScript': self.viewer_script,
                    'HealthOrthanc': {'ViewerSecret': self.viewer_secret},
                    })
        scripts = []
        if self.readonly_delete:
            scripts.append(('readonly_delete.lua', READONLY_DELETE_LUA))
        if self.lua:
            scripts.append(('extra.lua', self.lua))
        config['LuaScripts'] = []
        for name, source in scripts:
            script = os.path.join(self.workdir, name)
            with open(script, 'w') as stream:
                stream.write(source)
            config['LuaScripts'].append(script)
        path = os.path.join(self.workdir, 'orthanc.json')
        with open(path, 'w') as stream:
            json.dump(config, stream, indent=2)
        return path

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(auth=self.auth, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError('Orthanc exited with %s:\n%s'
                        % (self.process.returncode, self.log_tail()))
                try:
                    if client.get(self.url + '/system').status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError('Orthanc did not start within %d s:\n%s'
            % (START_TIMEOUT, self.log_tail()))

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors='replace') as stream:
                return ''.join(stream.readlines()[-lines:])
        except OSError:
            return ''

    def stop(self, keep=None):
        """SIGTERM, then SIGKILL after 10 s; remove the temp folder.

        When the storage is thrown away anyway, SIGKILL at once: Orthanc
        1.10 needs 2.5-3.5 s to shut down gracefully.
        """
        keep = self.keep if keep is None else keep
        discard = not keep and self._own_workdir and self.workdir
        process, self.process = self.process, None
        if process is not None:
            atexit.unregister(self._atexit)
            if process.poll() is None:
                process.send_signal(
                    signal.SIGKILL if discard else signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        self.pid = None
        if discard:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self.port = None

    def kill(self):
        "SIGKILL without cleanup: simulates a crash (storage kept)."
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            atexit.unregister(self._atexit)
            self.process = None
            self.pid = None

    def restart(self):
        "Stop keeping the storage and start again on the same port."
        self.stop(keep=True)
        return self.start()

    def _atexit(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if not self.keep and self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        return '<OrthancServer %s pid=%s>' % (
            self.url if self.port else '-', self.pid)


_shared = None
_shared_lock = threading.Lock()


def shared_server():
    "One Orthanc per test process, started on first use, stopped at exit."
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = OrthancServer().start()
            atexit.register(_shared.stop)
        return _shared


def upload_files(server, files):
    "POST raw bytes to /instances (fixtures); returns Orthanc's answers."
    answers = []
    with httpx.Client(auth=server.auth, timeout=60) as client:
        for data in files:
            response = client.post(server.url + '/instances', content=data)
            response.raise_for_status()
            answers.append(response.json())
    return answers


def clear(server):
    "Delete every patient (hence every study) stored in the server."
    with httpx.Client(auth=server.auth, timeout=60) as client:
        for patient in client.get(server.url + '/patients').json():
            client.delete(server.url + '/patients/' + patient)

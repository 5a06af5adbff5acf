# SPDX-License-Identifier: GPL-3.0-or-later
"""Part of the Orthanc adapter (orthanc.py): POST /instances on plain
keep-alive sockets.

Storing a file is the one request sent thousands of times in a row (a
patient CD, the streaming route).  httpx's layers (building the request,
the auth flow, cookies, h11's checks, the answer's objects) cost about
1 ms of CPU a file there, more than sending its half megabyte, and the
route's threads share one interpreter lock.  So uploads go out on sockets
of their own, with the rules of the adapter's bounded transport:

* every socket operation ends by the request's deadline (a host trickling
  bytes gets no more time than a silent one);
* the answer is capped (AnswerTooLarge) and read whole before the socket
  is used again;
* nothing is followed: a redirect is an answer like any other;
* the credentials travel only in the Authorization header.

No Tryton code and no error texts for people here: OSError, TimeoutError,
ssl.SSLError and ProtocolError come out, and orthanc.OrthancClient maps
them to the adapter's exceptions.
"""
import base64
import io
import select
import socket
import ssl
import threading
import time
import urllib.parse

MAX_LINE = 65536  # bytes of the status line or of one header line
MAX_HEADERS = 100
# Seconds a kept-alive socket may wait for its next request.  Orthanc
# closes a connection idle for about a second (fixed in 1.10, the default
# KeepAliveTimeout later): a socket reused at that moment would be closed
# under a request whose body, streamed, cannot be sent again.
MAX_IDLE = 0.5


class ProtocolError(Exception):
    "The answer is not HTTP/1.x as this reader knows it."


class AnswerTooLarge(Exception):
    "The answer's body is larger than the limit given."


class _Stale(Exception):
    "A kept-alive socket failed before any answer: worth one more try."


def time_left(deadline):
    "Seconds to deadline (a time.monotonic() value); TimeoutError if none."
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError('deadline reached')
    return left


class _DeadlineReader(io.RawIOBase):
    "A socket read by a buffered reader, each read ending by the deadline."

    def __init__(self, sock, deadline):
        self._sock = sock
        self._deadline = deadline

    def readable(self):
        return True

    def readinto(self, buffer):
        self._sock.settimeout(time_left(self._deadline))
        return self._sock.recv_into(buffer)


class Uploads:
    """POST <url>/instances on keep-alive sockets, shared by the threads
    of one adapter client."""

    def __init__(self, url, user, password, tls_context, counted=None):
        """url: Orthanc's base URL, without credentials; tls_context: the
        ssl.SSLContext of an https URL (None: certificates not checked);
        counted: called before each request is sent (a retry included)."""
        self._counted = counted or (lambda: None)
        parts = urllib.parse.urlsplit(url)
        self.valid = (parts.scheme in ('http', 'https')
            and bool(parts.hostname) and _printable(parts.netloc + parts.path))
        if not self.valid:
            return
        self._address = (parts.hostname,
            parts.port or (443 if parts.scheme == 'https' else 80))
        self._tls = None
        if parts.scheme == 'https':
            self._tls = tls_context or _unverified_context()
        path = urllib.parse.quote(parts.path.rstrip('/'),
            safe="/%:@!$&'()*+,;=-._~")
        lines = ['POST %s/instances HTTP/1.1' % path,
            'Host: %s' % _ascii_host(parts.netloc)]
        if user:
            lines.append('Authorization: Basic ' + base64.b64encode(
                    ('%s:%s' % (user, password or '')).encode()).decode())
        self._head = ('\r\n'.join(lines) + '\r\n').encode('ascii')
        self._idle = []
        self._lock = threading.Lock()

    def post(self, body, length, deadline, limit):
        """Send body (bytes-like, or an iterable of bytes-like pieces that
        may be reused once sent) of length bytes: (status, headers {lower
        case name: value}, content) of the answer.  A socket kept alive
        that turns out closed is replaced and the request sent again once,
        for a bytes-like body only: an iterable may not give its pieces
        twice."""
        resendable = isinstance(body, (bytes, bytearray, memoryview))
        for attempt in (1, 2):
            sock, reused = self._socket(deadline)
            self._counted()
            try:
                return self._exchange(sock, reused, body, length, deadline,
                    limit)
            except _Stale:
                sock.close()
                if attempt == 2 or not resendable:
                    raise ConnectionResetError('connection lost while '
                        'sending') from None
            except BaseException:
                sock.close()
                raise

    def _exchange(self, sock, reused, body, length, deadline, limit):
        reader = io.BufferedReader(_DeadlineReader(sock, deadline))
        try:
            answer = self._send_and_read(sock, reader, body, length,
                deadline, limit)
        except (BrokenPipeError, ConnectionResetError, EmptyAnswer):
            if reused:
                raise _Stale() from None
            raise
        status, headers, content, keep_alive = answer
        # Bytes past the answer (none from a server that does not
        # pipeline) would be lost with the reader, as with http.client.
        if keep_alive:
            with self._lock:
                self._idle.append((sock, time.monotonic()))
        else:
            sock.close()
        return status, headers, content

    def _send_and_read(self, sock, reader, body, length, deadline, limit):
        try:
            self._send(sock, body, length, deadline)
        except (BrokenPipeError, ConnectionResetError):
            # A server may answer and stop reading before the body's end
            # (a refused login): its answer says why.
            answer = _answer_if_any(reader, limit)
            if answer is None:
                raise
            return answer
        return read_answer(reader, limit)

    def _send(self, sock, body, length, deadline):
        sock.settimeout(time_left(deadline))
        sock.sendall(self._head + b'Content-Length: %d\r\n\r\n' % length)
        if isinstance(body, (bytes, bytearray, memoryview)):
            body = (body,)
        for piece in body:
            sock.settimeout(time_left(deadline))
            sock.sendall(piece)

    def _socket(self, deadline):
        "A kept-alive socket still open, else a new one: (socket, reused)."
        while True:
            with self._lock:
                sock, since = self._idle.pop() if self._idle else (None, 0)
            if sock is None:
                return self._connect(deadline), False
            if time.monotonic() - since < MAX_IDLE and _idle_and_open(sock):
                return sock, True
            sock.close()

    def _connect(self, deadline):
        sock = socket.create_connection(self._address,
            timeout=time_left(deadline))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock.settimeout(time_left(deadline))
                sock = self._tls.wrap_socket(sock,
                    server_hostname=self._address[0])
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self):
        "Close the sockets kept alive."
        if not self.valid:
            return
        with self._lock:
            idle, self._idle = self._idle, []
        for sock, _ in idle:
            sock.close()


class EmptyAnswer(ProtocolError):
    "The server closed the connection without answering."


def read_answer(reader, limit):
    """One HTTP/1.x answer from reader (a buffered reader of the socket):
    (status, headers, content, whether the socket may be used again)."""
    while True:
        version, status = _status_line(reader)
        headers = _headers(reader)
        # A 1xx answer (not asked for: no Expect header) is followed by the
        # real one.
        if not 100 <= status < 200:
            break
    chunked = 'chunked' in headers.get('transfer-encoding', '').lower()
    length = headers.get('content-length')
    if chunked:
        content = _read_chunked(reader, limit)
    elif length is not None:
        content = _read_length(reader, _content_length(length), limit)
    else:
        # Delimited by the end of the connection.
        content = reader.read(limit + 1)
        if len(content) > limit:
            raise AnswerTooLarge()
    keep_alive = ((chunked or length is not None)
        and version == 'HTTP/1.1'
        and headers.get('connection', '').lower() != 'close')
    return status, headers, content, keep_alive


def _answer_if_any(reader, limit):
    "The answer a server sent before it closed, None if it sent none."
    try:
        status, headers, content, _ = read_answer(reader, limit)
    except (OSError, ProtocolError, AnswerTooLarge):
        return None
    return status, headers, content, False


def _status_line(reader):
    line = _line(reader)
    if not line:
        raise EmptyAnswer('no answer')
    parts = line.split(None, 2)
    if (len(parts) < 2 or parts[0] not in (b'HTTP/1.1', b'HTTP/1.0')
            or not parts[1].isdigit() or len(parts[1]) != 3):
        raise ProtocolError('not an HTTP answer')
    return parts[0].decode('ascii'), int(parts[1])


def _headers(reader):
    headers = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(reader)
        if line in (b'\r\n', b'\n'):
            return headers
        name, colon, value = line.partition(b':')
        if not colon or not name.strip():
            raise ProtocolError('malformed header line')
        name = name.strip().lower().decode('latin-1')
        value = value.strip().decode('latin-1')
        if name in headers and name in ('content-length',
                'transfer-encoding'):
            raise ProtocolError('repeated %s header' % name)
        headers[name] = value
    raise ProtocolError('too many headers')


def _line(reader):
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ProtocolError('header line too long')
    if line and not line.endswith(b'\n'):
        raise ProtocolError('answer cut in its headers')
    return line


def _content_length(value):
    if not value.isdigit():
        raise ProtocolError('invalid Content-Length')
    return int(value)


def _read_length(reader, length, limit):
    if length > limit:
        raise AnswerTooLarge()
    content = reader.read(length)
    if len(content) != length:
        raise ProtocolError('answer cut in its body')
    return content


def _read_chunked(reader, limit):
    pieces, total = [], 0
    while True:
        size = _line(reader).split(b';', 1)[0].strip()
        try:
            size = int(size, 16)
        except ValueError:
            raise ProtocolError('invalid chunk size') from None
        if size == 0:
            break
        total += size
        if total > limit:
            raise AnswerTooLarge()
        pieces.append(_read_length(reader, size, limit))
        if _line(reader) not in (b'\r\n', b'\n'):
            raise ProtocolError('chunk not ended')
    _headers(reader)  # trailers, if any
    return b''.join(pieces)


def _idle_and_open(sock):
    """Whether a kept-alive socket can take a request: the server has not
    closed it, and nothing is waiting on it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def _printable(text):
    return all(c.isprintable() and not c.isspace() for c in text)


def _ascii_host(netloc):
    "The Host header of netloc (an internationalised name in ASCII)."
    try:
        return netloc.encode('idna').decode('ascii')
    except UnicodeError:
        return netloc.encode('ascii', 'replace').decode('ascii')


def _unverified_context():
    "TLS without certificate checks (the server's verify_tls is off)."
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context

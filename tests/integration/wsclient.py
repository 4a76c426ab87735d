"""wsclient.py — a websocket client (RFC 6455) on the Python standard library
only, for sdgate's integration tests.

    ws = WSClient("127.0.0.1", 8080, "/ws")
    ws.send_json({"type": "hello"})
    welcome = ws.wait_for(lambda m: m.get("type") == "welcome")
    ws.close()

Client frames are masked with a fresh random key, as the RFC requires. A
reader thread collects every message (.messages: parsed JSON when it is JSON,
else the text; binary payloads as bytes), answers pings, and records the
server's close frame (.close_code, .close_reason) and end of stream
(.closed). Raw helpers (send_frame, send_raw) let tests send what a
well-behaved client never would: invalid UTF-8, fragments, huge messages.
"""

import base64
import hashlib
import json
import os
import selectors
import socket
import struct
import threading
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeError(Exception):
    def __init__(self, status, headers, body):
        super().__init__("websocket handshake refused: HTTP %s" % status)
        self.status = status
        self.headers = headers
        self.body = body


def _mask(payload, key):
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One encoded frame (client frames are masked unless mask=False)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def raw_upgrade(host, port, path="/ws", timeout=10.0, rcvbuf=None):
    """A bare socket that asks for a websocket upgrade and reads the answer's
    head byte by byte (so no frame after it is consumed). Returns (socket,
    status): 101, another HTTP status, or 0 when the server closed without
    an answer. For tests that read frames themselves, or only count upgrades."""
    s = socket.create_connection((host, port), timeout=timeout)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host, key)).encode())
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            b = s.recv(1)
            if not b:
                break
            buf += b
    except OSError:
        pass
    try:
        status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/1.") else 0
    except (IndexError, ValueError):
        status = 0
    return s, status


class WSClient:
    def __init__(self, host, port, path="/ws", timeout=30.0, headers=None, origin=None):
        self.host, self.port, self.path = host, port, path
        self.messages = []          # every data message, in order
        self.closed = False         # the stream ended (close frame or EOF)
        self.close_code = None
        self.close_reason = None
        self.error = None
        self._cv = threading.Condition()
        self._send_lock = threading.Lock()
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port), "Upgrade: websocket",
               "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if origin:
            req.append("Origin: " + origin)
        for k, v in (headers or {}).items():
            req.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode("latin-1"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise HandshakeError(None, {}, buf)
            buf += chunk
            if len(buf) > 65536:
                raise HandshakeError(None, {}, buf[:200])
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            status = None
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status != 101:
            self.sock.close()
            raise HandshakeError(status, hdrs, rest)
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            self.sock.close()
            raise HandshakeError(status, hdrs, b"bad Sec-WebSocket-Accept")
        self.headers = hdrs
        self._buf = rest
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # ------------------------------------------------------------ sending

    def send_raw(self, data):
        with self._send_lock:
            self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", fin=True, mask=True):
        self.send_raw(frame(opcode, payload, fin, mask))

    def send_text(self, text):
        """A text message in one frame; text may be bytes (sent as they are,
        valid UTF-8 or not)."""
        self.send_frame(OP_TEXT, text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def close(self, code=1000, wait=2.0):
        """Sends a close frame, waits a moment for the server's, closes the socket."""
        try:
            self.send_frame(OP_CLOSE, struct.pack("!H", code))
        except OSError:
            pass
        self.wait_closed(wait)
        self.abort()

    def abort(self):
        """Drops the TCP connection without a close frame."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------ receiving

    def _read_exact(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise EOFError("connection closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_frame(self):
        b0, b1 = self._read_exact(2)
        fin, opcode = b0 & 0x80, b0 & 0x0F
        n = b1 & 0x7F
        if n == 126:
            n, = struct.unpack("!H", self._read_exact(2))
        elif n == 127:
            n, = struct.unpack("!Q", self._read_exact(8))
        key = self._read_exact(4) if b1 & 0x80 else None
        payload = self._read_exact(n) if n else b""
        if key:
            payload = _mask(payload, key)
        return bool(fin), opcode, payload

    def _deliver(self, opcode, payload):
        if opcode == OP_TEXT:
            text = payload.decode("utf-8")
            try:
                msg = json.loads(text)
            except ValueError:
                msg = text
        else:
            msg = payload
        with self._cv:
            self.messages.append(msg)
            self._cv.notify_all()

    def _read_loop(self):
        parts, first_op = [], None
        try:
            while True:
                fin, opcode, payload = self._read_frame()
                if opcode == OP_PING:
                    try:
                        self.send_frame(OP_PONG, payload)
                    except OSError:
                        pass
                    continue
                if opcode == OP_PONG:
                    continue
                if opcode == OP_CLOSE:
                    with self._cv:
                        if len(payload) >= 2:
                            self.close_code, = struct.unpack("!H", payload[:2])
                            self.close_reason = payload[2:].decode("utf-8", "replace")
                    try:
                        self.send_frame(OP_CLOSE, payload[:2])
                    except OSError:
                        pass
                    break
                if opcode in (OP_TEXT, OP_BINARY):
                    first_op, parts = opcode, [payload]
                elif opcode == OP_CONT:
                    parts.append(payload)
                if fin and first_op is not None:
                    self._deliver(first_op, b"".join(parts))
                    parts, first_op = [], None
        except (EOFError, OSError, ValueError) as e:
            self.error = e
        finally:
            with self._cv:
                self.closed = True
                self._cv.notify_all()

    def wait_for(self, pred, timeout=30.0, start=0):
        """The first message (from index start) with pred(message) true, or
        None after timeout or once the connection closed. Non-dict messages
        are passed to pred too."""
        deadline = time.monotonic() + timeout
        with self._cv:
            i = start
            while True:
                while i < len(self.messages):
                    m = self.messages[i]
                    i += 1
                    try:
                        if pred(m):
                            return m
                    except (AttributeError, TypeError, KeyError):
                        pass
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self._cv.wait(min(left, 0.5))

    def wait_type(self, type_, timeout=30.0, id=None, start=0):
        """The first message {"type": type_} (with that id, when given)."""
        return self.wait_for(lambda m: isinstance(m, dict) and m.get("type") == type_
                             and (id is None or m.get("id") == id), timeout, start)

    def wait_closed(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self._cv:
            while not self.closed and time.monotonic() < deadline:
                self._cv.wait(0.2)
            return self.closed

    def of_job(self, id):
        """Every message carrying this job id, in order."""
        with self._cv:
            return [m for m in self.messages if isinstance(m, dict) and m.get("id") == id]

    def count(self):
        with self._cv:
            return len(self.messages)


# ---------------------------------------------------------------- many idle clients

class _Idle:
    __slots__ = ("sock", "state", "buf")


def open_idle(port, n, batch=400, timeout=120.0, path="/ws"):
    """Opens n websocket connections to 127.0.0.1:port, each saying hello and
    reading its welcome, at most `batch` handshakes in flight, without a
    thread per connection (for thousands). Returns (open sockets, seconds,
    failures); the sockets are left idle: call drain_idle now and then."""
    sel = selectors.DefaultSelector()
    hello = frame(OP_TEXT, b'{"type":"hello"}')
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (path, port, base64.b64encode(os.urandom(16)).decode())).encode()
    done, failed, started, in_flight = [], 0, 0, 0
    t0 = time.monotonic()
    while (started < n or in_flight) and time.monotonic() - t0 < timeout:
        while started < n and in_flight < batch:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            c = _Idle()
            c.sock, c.state, c.buf = s, "connecting", b""
            sel.register(s, selectors.EVENT_WRITE, c)
            started += 1
            in_flight += 1
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            try:
                if c.state == "connecting":
                    if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise OSError("connect failed")
                    c.sock.sendall(req)
                    c.state = "upgrading"
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                data = c.sock.recv(65536)
                if not data:
                    raise OSError("closed")
                c.buf += data
                if c.state == "upgrading" and b"\r\n\r\n" in c.buf:
                    head, c.buf = c.buf.split(b"\r\n\r\n", 1)
                    if not head.startswith(b"HTTP/1.1 101"):
                        raise OSError("no upgrade")
                    c.sock.sendall(hello)
                    c.state = "hello"
                if c.state == "hello" and b'"welcome"' in c.buf:
                    sel.unregister(c.sock)
                    c.buf = b""
                    done.append(c.sock)
                    in_flight -= 1
            except OSError:
                sel.unregister(c.sock)
                c.sock.close()
                failed += 1
                in_flight -= 1
    sel.close()
    return done, time.monotonic() - t0, failed + (n - started)


def drain_idle(socks):
    """Reads whatever the server pushed to idle sockets (board updates), so
    that no buffer fills."""
    for s in socks:
        try:
            s.setblocking(False)
            while s.recv(65536):
                pass
        except (BlockingIOError, OSError):
            pass

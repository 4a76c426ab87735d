"""sdtest.py — the shared harness of sdgate's integration tests.

The tests drive the real programs over loopback HTTP, using the Python 3
standard library only. This module starts and stops programs on free ports
(each with its own temp dir and log), speaks HTTP, decodes PNGs, and collects
checks:

    import sdtest as t
    def main():
        be = t.start_backend("--provider", "p")
        status, body = t.http("GET", be.url + "/internal/ping")
        t.check("ping answers 200", status == 200, status)
    t.run(main)   # stops every program (checking a clean exit), prints
                  # "N passed, M failed" and exits non-zero on failure

Programs are found under $SDGATE_BIN (the CMake build dir; ctest sets it).
Every started process is killed at exit, also when a test raises; when any
check failed, the tail of each program's log is printed.
"""

import atexit
import base64
import http.client as httpclient
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
BIN_DIR = os.environ.get("SDGATE_BIN") or os.path.join(SOURCE_ROOT, "build")

# Generous: the suite runs under AddressSanitizer on small machines.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
JOB_TIMEOUT_S = 120.0

_tmp_root = tempfile.mkdtemp(prefix="sdgate-it-")
_procs = []           # every Program started, for cleanup
_results = [0, 0]     # passed, failed
_results_lock = threading.Lock()


# ---------------------------------------------------------------- checks

def check(name, condition, detail=""):
    """Records one check and prints one line. Returns bool(condition)."""
    ok = bool(condition)
    with _results_lock:
        _results[0 if ok else 1] += 1
    if ok:
        print("ok   - %s" % name, flush=True)
    else:
        d = detail if isinstance(detail, str) else repr(detail)
        if len(d) > 1500:
            d = d[:1500] + "...(%d chars)" % len(d)
        print("FAIL - %s: %s" % (name, d), flush=True)
    return ok


def failed_count():
    return _results[1]


def finish():
    """Prints the summary line and exits: 0 when every check passed."""
    passed, failed = _results
    if passed + failed == 0:
        print("no checks ran", flush=True)
        failed = 1
        _results[1] = 1
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(0 if failed == 0 else 1)


def run(main):
    """Runs main(); any exception is a failed check. Then stops every program
    still running (each must exit 0 on SIGTERM), prints logs on failure and
    the summary, and exits."""
    t0 = time.monotonic()
    try:
        main()
    except Exception:  # noqa: BLE001 - a test error is a failure, never a crash
        check("test body ran to the end without an exception", False, traceback.format_exc())
    finally:
        for p in list(_procs):
            if p.running():
                p.stop()
            elif not p.stopped:
                p.stopped = True
                check("%s was still running at the end" % p.name, False,
                      "it exited on its own with code %r" % p.proc.returncode)
        if failed_count():
            for p in _procs:
                p.print_log_tail()
        print("# %s took %.1f s" % (os.path.basename(sys.argv[0]), time.monotonic() - t0), flush=True)
        _cleanup()
    finish()


def _cleanup():
    for p in _procs:
        p.kill()
    shutil.rmtree(_tmp_root, ignore_errors=True)


atexit.register(_cleanup)


def tmpdir(prefix="t"):
    """A fresh directory under this test's temp root (removed at exit)."""
    return tempfile.mkdtemp(prefix=prefix + "-", dir=_tmp_root)


def free_port():
    """A port that was free a moment ago on 127.0.0.1."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ---------------------------------------------------------------- programs

def _child_env():
    env = dict(os.environ)
    supp = os.path.join(SOURCE_ROOT, "tests", "lsan.supp")
    if "LSAN_OPTIONS" not in env and os.path.exists(supp):
        env["LSAN_OPTIONS"] = "suppressions=%s:print_suppressions=0" % supp
    return env


class Program:
    """One started program: .url, .port, .proc, .log_path, .name."""

    def __init__(self, name, argv, port):
        self.name = name
        self.argv = argv
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.log_path = os.path.join(tmpdir(name), "log.txt")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=_child_env())
        self.stopped = False
        _procs.append(self)

    def running(self):
        return self.proc.poll() is None

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def print_log_tail(self, lines=40):
        print("# ---- last lines of %s's log (%s) ----" % (self.name, " ".join(self.argv[1:])))
        for line in self.log_tail(lines).splitlines():
            print("# " + line)
        print("# ----", flush=True)

    def stop(self, timeout=STOP_TIMEOUT_S, label=None):
        """SIGTERM, wait; SIGKILL after timeout. Records the check that the
        program exited 0 in time (sanitizer reports make the code non-zero).
        Returns (exit code, seconds to exit)."""
        if self.stopped:
            return self.proc.returncode, 0.0
        self.stopped = True
        t0 = time.monotonic()
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = None
        took = time.monotonic() - t0
        self._log.close()
        check(label or "%s exits with code 0 on SIGTERM within %.0f s" % (self.name, timeout),
              rc == 0, "exit code %r after %.1f s; log tail:\n%s" % (rc, took, self.log_tail(25)))
        return rc, took

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.stopped = True


def backend_path():
    return os.path.join(BIN_DIR, "backend", "sdgate-backend")


def start_backend(*args, name="backend", port=None):
    """Starts sdgate-backend --listen 127.0.0.1:<port, default a free one> ARGS
    and waits until GET /internal/ping answers 200. Raises when it does not."""
    exe = backend_path()
    if not os.access(exe, os.X_OK):
        raise RuntimeError("no backend binary at %s (set SDGATE_BIN to the build dir)" % exe)
    fixed = port
    for attempt in range(3):  # a free port may be taken by a parallel test meanwhile
        port = fixed or free_port()
        prog = Program(name, [exe, "--listen", "127.0.0.1:%d" % port] + [str(a) for a in args], port)
        if wait_ready(prog, "/internal/ping"):
            return prog
        code = prog.proc.poll()
        prog.kill()
        tail = prog.log_tail()
        if code is not None and "in use" in tail.lower() and attempt < 2 and not fixed:
            continue
        raise RuntimeError("%s did not answer /internal/ping within %.0f s; exit code %r; log:\n%s"
                           % (name, START_TIMEOUT_S, code, tail))


def wait_ready(prog, path, timeout=START_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not prog.running():
            return False
        try:
            status, _ = http("GET", prog.url + path, timeout=2)
            if status == 200:
                return True
        except (OSError, httpclient.HTTPException):
            pass
        time.sleep(0.1)
    return False


def run_tool(args, timeout=30):
    """Runs a program to completion: (exit code, stdout text, stderr text)."""
    p = subprocess.run(args, capture_output=True, timeout=timeout, env=_child_env(),
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------- HTTP

class Reply:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers  # dict, lower-case names
        self.raw = raw
        self.json = None
        self.is_json = False
        try:
            self.json = json.loads(raw.decode("utf-8")) if raw else None
            self.is_json = bool(raw)
        except (ValueError, UnicodeDecodeError):
            pass


def request(method, url, json_body=None, raw_body=None, headers=None, timeout=JOB_TIMEOUT_S):
    """One HTTP request on a fresh connection. Returns a Reply. Raises
    OSError/HTTPException when the connection fails."""
    u = urllib.parse.urlsplit(url)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    hdrs = dict(headers or {})
    body = None
    if json_body is not None:
        body = json.dumps(json_body).encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    elif raw_body is not None:
        body = raw_body if isinstance(raw_body, bytes) else raw_body.encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw)
    finally:
        conn.close()


def http(method, url, json_body=None, raw_body=None, headers=None, timeout=JOB_TIMEOUT_S):
    """(status, parsed JSON) — or (status, raw bytes) when the body is not JSON."""
    r = request(method, url, json_body, raw_body, headers, timeout)
    return r.status, (r.json if r.is_json else r.raw)


def raw_exchange(host, port, data, timeout=30, chunk=65536):
    """Sends raw bytes on one connection while reading whatever comes back
    (the server may answer and close before the whole body is sent).
    Returns (status or None, headers dict, body bytes, error text or None)."""
    s = socket.create_connection((host, port), timeout=timeout)
    got = bytearray()
    err = None
    try:
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + timeout
        import select
        while time.monotonic() < deadline:
            want_w = [s] if sent < len(data) else []
            r, w, _ = select.select([s], want_w, [], 0.5)
            if r:
                try:
                    b = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    b = None
                except OSError as e:
                    err = "recv: %s" % e
                    break
                if b == b"":
                    break
                if b:
                    got += b
                    if _response_complete(got):
                        break
            if w:
                try:
                    sent += s.send(data[sent:sent + chunk])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    err = "send after %d bytes: %s" % (sent, e)
                    want_w = []
                    sent = len(data)  # stop sending, keep reading
        else:
            err = "timed out"
    finally:
        s.close()
    status, headers, body = _parse_response(bytes(got))
    return status, headers, body, err


def _parse_response(buf):
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None, {}, b""
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    return status, headers, body


def _unchunk(b):
    out = bytearray()
    while b:
        line, _, rest = b.partition(b"\r\n")
        try:
            n = int(line.split(b";")[0], 16)
        except ValueError:
            break
        if n == 0:
            break
        out += rest[:n]
        b = rest[n + 2:]
    return bytes(out)


def _response_complete(buf):
    status, headers, body = _parse_response(bytes(buf))
    if status is None:
        return False
    if "content-length" in headers:
        head_len = bytes(buf).index(b"\r\n\r\n") + 4
        return len(buf) - head_len >= int(headers["content-length"])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return bytes(buf).endswith(b"0\r\n\r\n")
    return False


class Background:
    """Runs fn(*args) on a thread; .join() returns (result, exception, seconds)."""

    def __init__(self, fn, *args, **kwargs):
        self.result = None
        self.error = None
        self.t0 = time.monotonic()
        self.t1 = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self.result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self.error = e
        self.t1 = time.monotonic()

    def done(self):
        return not self.thread.is_alive()

    def join(self, timeout=JOB_TIMEOUT_S):
        self.thread.join(timeout)
        if self.thread.is_alive():
            return None, TimeoutError("still running after %.0f s" % timeout), None
        return self.result, self.error, self.t1 - self.t0


# ---------------------------------------------------------------- A1111 helpers

def txt2img(url, body, timeout=JOB_TIMEOUT_S):
    """POST /sdapi/v1/txt2img. Returns (Reply, seconds)."""
    t0 = time.monotonic()
    r = request("POST", url + "/sdapi/v1/txt2img", json_body=body, timeout=timeout)
    return r, time.monotonic() - t0


def small_job(**over):
    """A cheap, valid txt2img request (64x64, 2 steps)."""
    body = {"prompt": "a green triangle", "seed": 7, "steps": 2, "width": 64, "height": 64,
            "sampler_name": "Euler"}
    body.update(over)
    return body


def info_of(reply):
    """The parsed info object of a txt2img reply, or None."""
    try:
        info = reply.json["info"]
        return json.loads(info) if isinstance(info, str) else None
    except (TypeError, KeyError, ValueError):
        return None


def images_of(reply):
    """The decoded PNG bytes of a txt2img reply's images (list), or None."""
    try:
        return [base64.b64decode(s, validate=True) for s in reply.json["images"]]
    except (TypeError, KeyError, ValueError):
        return None


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def short(v, n=600):
    s = v if isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def describe(reply):
    """Status and a short body, for failure details."""
    if reply is None:
        return "no reply"
    body = reply.json if reply.is_json else reply.raw
    if isinstance(body, dict) and isinstance(body.get("images"), list):
        body = dict(body)
        body["images"] = ["<%d chars>" % len(s) if isinstance(s, str) else s for s in body["images"]]
    return "HTTP %s %s" % (reply.status, short(body))


# ---------------------------------------------------------------- PNG

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PNGError(ValueError):
    pass


class Image:
    def __init__(self, width, height, channels, pixels, text):
        self.width = width
        self.height = height
        self.channels = channels  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
        self.pixels = pixels      # bytes, row-major, width*height*channels
        self.text = text          # tEXt chunks {keyword: text}

    def mean_rgb(self):
        """Mean (R, G, B) over all pixels, 0..255 floats."""
        n = self.width * self.height
        c = self.channels
        if c in (1, 2):
            g = sum(self.pixels[0::c]) / n
            return g, g, g
        return (sum(self.pixels[0::c]) / n, sum(self.pixels[1::c]) / n, sum(self.pixels[2::c]) / n)

    def stddev(self):
        """Standard deviation over every colour sample: 0 for a flat image."""
        c = self.channels
        vals = [self.pixels[i::c] for i in range(min(c, 3))]
        allv = b"".join(vals)
        m = sum(allv) / len(allv)
        return (sum((x - m) ** 2 for x in allv) / len(allv)) ** 0.5


def decode_png(data):
    """Decodes an 8-bit, non-interlaced PNG (grey, grey+alpha, RGB, RGBA),
    checking the signature, every chunk's CRC, IHDR and IEND. Raises PNGError."""
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(PNG_SIGNATURE):
        raise PNGError("no PNG signature")
    pos = len(PNG_SIGNATURE)
    ihdr = None
    idat = bytearray()
    text = {}
    seen_iend = False
    first = True
    while pos < len(data):
        if pos + 8 > len(data):
            raise PNGError("truncated chunk header at %d" % pos)
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > len(data):
            raise PNGError("truncated %r chunk" % ctype)
        cdata = data[pos + 8:pos + 8 + length]
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(ctype + cdata) & 0xffffffff != crc:
            raise PNGError("bad CRC in %r chunk" % ctype)
        pos += 12 + length
        if first and ctype != b"IHDR":
            raise PNGError("first chunk is %r, not IHDR" % ctype)
        first = False
        if ctype == b"IHDR":
            if length != 13:
                raise PNGError("IHDR length %d" % length)
            ihdr = struct.unpack(">IIBBBBB", cdata)
        elif ctype == b"IDAT":
            idat += cdata
        elif ctype == b"tEXt":
            k, _, v = cdata.partition(b"\0")
            text[k.decode("latin-1")] = v.decode("latin-1")
        elif ctype == b"iTXt":
            k, _, rest = cdata.partition(b"\0")
            if len(rest) >= 2:
                comp = rest[0]
                rest = rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _tkey, _, v = rest.partition(b"\0")
                if comp:
                    v = zlib.decompress(v)
                text[k.decode("latin-1")] = v.decode("utf-8", "replace")
        elif ctype == b"IEND":
            seen_iend = True
            break
    if ihdr is None:
        raise PNGError("no IHDR")
    if not seen_iend:
        raise PNGError("no IEND")
    width, height, depth, ctype_, comp, filt, interlace = ihdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype_)
    if width == 0 or height == 0:
        raise PNGError("empty image %dx%d" % (width, height))
    if depth != 8 or channels is None:
        raise PNGError("unsupported bit depth %d / colour type %d" % (depth, ctype_))
    if comp != 0 or filt != 0 or interlace != 0:
        raise PNGError("unsupported compression/filter/interlace %d/%d/%d" % (comp, filt, interlace))
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error as e:
        raise PNGError("IDAT does not inflate: %s" % e)
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise PNGError("IDAT has %d bytes, expected %d" % (len(raw), height * (stride + 1)))
    out = bytearray(height * stride)
    prev = bytearray(stride)
    bpp = channels
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if ftype == 0:
            pass
        elif ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xff
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xff
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xff
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xff
        else:
            raise PNGError("bad filter type %d on row %d" % (ftype, y))
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return Image(width, height, channels, bytes(out), text)


def try_decode_png(data):
    """(Image, None) or (None, error text)."""
    try:
        return decode_png(data), None
    except PNGError as e:
        return None, str(e)

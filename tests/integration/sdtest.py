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
    t.run(main)   # stops every program, last started first (checking a
                  # clean exit), prints
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
import re
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
_servers = []         # in-process HTTP servers (FakeBackend, RecordingProxy), closed at exit


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
        # Last started, first stopped: a balancer (a client of its backends)
        # stops before the backends it holds connections to.
        for p in reversed(list(_procs)):
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
        try:
            p.signal(signal.SIGCONT)
        except OSError:
            pass
        p.kill()
    for srv in list(_servers):
        srv.close()
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

    def __init__(self, name, argv, port, env=None):
        self.name = name
        self.argv = argv
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.log_path = os.path.join(tmpdir(name), "log.txt")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=dict(_child_env(), **(env or {})))
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
            try:
                self.proc.send_signal(signal.SIGCONT)  # a test may have left it SIGSTOPped
            except OSError:
                pass
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

    def signal(self, sig):
        """Sends sig (e.g. signal.SIGSTOP) to the program."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL (kill -9), no exit-code check."""
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.stopped = True


def backend_path():
    return os.path.join(BIN_DIR, "backend", "sdgate-backend")


def start_program(name, exe, args, ready_path, port=None, setup=None, env=None):
    """Starts EXE --listen 127.0.0.1:<port, default a free one> ARGS and waits
    until GET ready_path answers 200; a free port taken meanwhile by a
    parallel test is retried on another. setup(prog) runs right after the
    start (to set attributes); env: extra environment variables. Returns the
    Program; raises when it does not come up."""
    if not os.access(exe, os.X_OK):
        raise RuntimeError("no %s binary at %s (set SDGATE_BIN to the build dir)" % (name, exe))
    fixed = port
    for attempt in range(3):
        port = fixed or free_port()
        prog = Program(name, [exe, "--listen", "127.0.0.1:%d" % port] + [str(a) for a in args], port, env)
        if setup:
            setup(prog)
        if wait_ready(prog, ready_path):
            return prog
        code = prog.proc.poll()
        prog.kill()
        tail = prog.log_tail()
        busy = "in use" in tail.lower() or "could not listen" in tail.lower()
        if code is not None and busy and attempt < 2 and not fixed:
            continue
        raise RuntimeError("%s did not answer %s within %.0f s; exit code %r; log:\n%s"
                           % (name, ready_path, START_TIMEOUT_S, code, tail))


def start_backend(*args, name="backend", port=None, env=None):
    """Starts sdgate-backend --listen 127.0.0.1:<port, default a free one> ARGS
    and waits until GET /internal/ping answers 200. Raises when it does not.
    With --registration-file F in ARGS, .registration_file is F (see
    backend_token)."""
    args = [str(a) for a in args]
    reg = args[args.index("--registration-file") + 1] if "--registration-file" in args[:-1] else None

    def setup(prog):
        prog.registration_file = reg
    return start_program(name, backend_path(), args, "/internal/ping", port, setup=setup, env=env)


def gateway_path():
    return os.path.join(BIN_DIR, "gateway", "sdgate-gateway")


def start_gateway(*args, name="gateway", port=None, wait_board=False):
    """Starts sdgate-gateway --listen 127.0.0.1:<port> --board-interval-ms 300
    ARGS (a later flag in ARGS wins) and waits until /healthz answers; with
    wait_board, also until its status is "ok" (the first board poll is done,
    so a welcome lists the GPUs)."""
    prog = start_program(name, gateway_path(), ["--board-interval-ms", "300"] + list(args), "/healthz", port)
    if wait_board:
        wait_until(lambda: request("GET", prog.url + "/healthz", timeout=5).json.get("status") == "ok", 15)
    return prog


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


def proc_rss_mib(pid):
    """A live process's resident memory (VmRSS), MiB."""
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024.0


def proc_peak_rss_mib(pid, reset=False):
    """A live process's peak resident memory (VmHWM), MiB: since it started,
    or since the last call with reset=True, which restarts the peak from the
    current RSS (/proc/PID/clear_refs, 5)."""
    if reset:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0


def proc_fds(pid):
    """A live process's open file descriptors."""
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_cpu_s(pid):
    """A live process's CPU time so far (user + system, all threads), seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def request(method, url, json_body=None, raw_body=None, headers=None, timeout=JOB_TIMEOUT_S, source=None):
    """One HTTP request on a fresh connection. Returns a Reply. Raises
    OSError/HTTPException when the connection fails. source: the local
    address to connect from (e.g. "127.0.0.2": another client on loopback)."""
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
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=timeout,
                                     source_address=(source, 0) if source else None)
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


def decode_png_b64(text):
    """The Image in a base64 PNG (an optional "data:...;base64," prefix
    skipped), or None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        data = base64.b64decode(text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True)
    except ValueError:
        return None
    return try_decode_png(data)[0]


def try_decode_png(data):
    """(Image, None) or (None, error text)."""
    try:
        return decode_png(data), None
    except PNGError as e:
        return None, str(e)


# ---------------------------------------------------------------- balancer helpers

FINAL_STATES = ("done", "failed", "cancelled")


def balancer_path():
    return os.path.join(BIN_DIR, "balancer", "sdgate-balancer")


def start_balancer(*args, name="balancer", port=None, db=None, env=None):
    """Starts sdgate-balancer --listen 127.0.0.1:<port> --db <db>
    --allow-private-backends ARGS and waits until GET /healthz answers 200
    (every test's backends are on loopback; a test of the default passes
    --allow-private-backends=false). db defaults to a fresh store: a file in
    a temp dir, or with SDGATE_TEST_STORE=postgresql a fresh database on
    this test's PostgreSQL server (postgres()); pass the same db (prog.db) to
    restart on the same state. Returns the Program, with .db set. Raises
    when it does not come up."""
    if db is None:
        db = fresh_db(name)

    def setup(prog):
        prog.db = db
    return start_program(name, balancer_path(), ["--db", db, "--allow-private-backends"] + list(args), "/healthz",
                         port, setup, env)


# ---------------------------------------------------------------- the balancer's store

def test_store():
    """"postgresql" when SDGATE_TEST_STORE says so (ctest's integration_pg_*), else "sqlite"."""
    return "postgresql" if os.environ.get("SDGATE_TEST_STORE", "").lower() in ("postgresql", "postgres", "pg") \
        else "sqlite"


def on_postgresql():
    return test_store() == "postgresql"


def fresh_db(name="balancer"):
    """A --db value for a new, empty store of the kind this run tests."""
    if on_postgresql():
        pg = postgres()
        return pg.url(pg.create_database())
    return os.path.join(tmpdir(name + "-db"), "balancer.db")


def pg_bin_dir():
    """Debian's PostgreSQL server programs: $SDGATE_PG_BIN, else the newest
    /usr/lib/postgresql/N/bin, else wherever pg_ctl is on PATH."""
    if os.environ.get("SDGATE_PG_BIN"):
        return os.environ["SDGATE_PG_BIN"]
    base = "/usr/lib/postgresql"
    versions = sorted((int(v) for v in os.listdir(base) if v.isdigit()), reverse=True) if os.path.isdir(base) else []
    for v in versions:
        d = os.path.join(base, str(v), "bin")
        if os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return d
    ctl = shutil.which("pg_ctl")
    if ctl:
        return os.path.dirname(ctl)
    raise RuntimeError("no PostgreSQL server programs (initdb, pg_ctl): install Debian's postgresql "
                       "(deploy/install-deps.sh) or set SDGATE_PG_BIN")


class Postgres:
    """A throwaway PostgreSQL server: initdb in a temp dir, pg_ctl on a free
    loopback port (socket dir in the temp dir), trust auth, superuser
    "sdgate"; fsync off (the tests kill balancers, never this server). The
    server refuses to run as root, so as root it runs as the "postgres" user
    (runuser) in a temp dir given to that user. Stopped at exit like any
    program (registered for teardown), after the balancers."""

    def __init__(self, owner_pid=None, settings=()):
        """owner_pid: the process whose end stops the server (default this
        one; the ctest fixture passes ctest's). settings: more "-c NAME=VALUE"."""
        self.bin = pg_bin_dir()
        self.owner_pid = owner_pid or os.getpid()
        self.settings = "".join(" -c %s" % kv for kv in settings)
        self.dir = tempfile.mkdtemp(prefix="sdgate-pg-")  # not under _tmp_root: the server's user must reach it
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "log.txt")
        self.port = None
        self.version = 0  # FILE_COPY is for the shared server (SharedPostgres)
        self.closed = False
        self._n = 0
        self._pg("initdb", "-D", self.data, "-A", "trust", "-U", "sdgate", "-E", "UTF8", "--locale=C", "--no-sync",
                 timeout=120)
        self.start()
        if self.owner_pid == os.getpid():
            _servers.append(self)
        self._watchdog()
        print("# PostgreSQL server (%s) on 127.0.0.1:%d" % (self.bin, self.port), flush=True)

    def _watchdog(self):
        """A shell in a session of its own that stops the server and removes
        its folder once this process is gone, however it ended (a ctest
        timeout's SIGKILL runs no teardown)."""
        stop = " ".join(self.as_user + [os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w",
                                        "stop"])
        script = ("while kill -0 %d 2>/dev/null; do sleep 1; done; %s >/dev/null 2>&1; rm -rf '%s'"
                  % (self.owner_pid, stop, self.dir))
        subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)

    def _pg(self, prog, *args, timeout=60):
        p = subprocess.run(self.as_user + [os.path.join(self.bin, prog)] + list(args), capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.dir)
        if p.returncode != 0:
            raise RuntimeError("%s failed (%d): %s %s" % (prog, p.returncode, p.stdout.decode(errors="replace"),
                                                          p.stderr.decode(errors="replace")))
        return p

    def start(self):
        """Starts the server (again: on the same port) and waits until it accepts connections."""
        for attempt in range(3):
            port = self.port or free_port()
            try:
                self._pg("pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t", "60", "-o",
                         "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off%s"
                         % (port, self.dir, self.settings), "start", timeout=90)
                self.port = port
                return
            except RuntimeError:
                if self.port or attempt == 2:
                    raise

    def stop(self, mode="fast"):
        """Stops the server (mode: fast, immediate); start() brings it back."""
        self._pg("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def url(self, dbname="postgres", password=None):
        """postgresql://sdgate[:password]@127.0.0.1:PORT/DBNAME"""
        return "postgresql://sdgate%s@127.0.0.1:%d/%s" % (":" + password if password else "", self.port, dbname)

    def create_database(self, name=None):
        """Creates a new empty database; returns its name (t<pid>_<n>: unique
        on a server that several test processes share)."""
        if name is None:
            self._n += 1
            name = "t%d_%d" % (os.getpid(), self._n)
        # FILE_COPY (PostgreSQL 15+) on the shared server, which logs no more WAL than it must
        # (pg_server.py): a copy of template1's files, where the default logs all of it too.
        self.query("postgres", 'CREATE DATABASE "%s"%s' % (name, " STRATEGY FILE_COPY" if self.version >= 150000
                                                              else ""))
        return name

    def query(self, dbname, sql):
        """Runs sql on database dbname (a name or a URL): psql_query()."""
        return psql_query(dbname if "://" in dbname else self.url(dbname), sql)

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.stop("immediate")
        except (RuntimeError, subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def psql_query(url, sql):
    """Runs sql with psql on the database at url: the rows, each a list of
    text fields (NULL as None). Raises with psql's message on an error."""
    psql = os.path.join(pg_bin_dir(), "psql")
    p = subprocess.run([psql if os.path.exists(psql) else "psql", "-X", "-q", "-A", "-t", "-F", "\x1f",
                        "-P", "null=\x1e", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError("psql: %s" % p.stderr.decode(errors="replace").strip())
    out = p.stdout.decode("utf-8", "replace")
    return [[None if f == "\x1e" else f for f in line.split("\x1f")] for line in out.split("\n") if line]


class SharedPostgres(Postgres):
    """The server of ctest's fixture pg_server (integration/pg_server.py),
    which every integration_pg_* test shares, each test in databases of its
    own: $SDGATE_TEST_PG_FILE names the file where the fixture wrote the
    server's URL. Never stopped or restarted by a test (start_postgres() is
    for that)."""

    def __init__(self, path):
        with open(path) as f:
            lines = f.read().split("\n")
        self.bin = pg_bin_dir()
        self.dir, self.data, self.log_path = lines[1], os.path.join(lines[1], "data"), os.path.join(lines[1], "log.txt")
        self.port = urllib.parse.urlsplit(lines[0]).port
        self.version = int(lines[2]) if len(lines) > 2 and lines[2].isdigit() else 0
        self.closed = False
        self._n = 0

    def start(self):
        raise RuntimeError("the shared PostgreSQL server is the fixture's: use start_postgres()")

    def stop(self, mode="fast"):
        self.start()

    def close(self):
        self.closed = True


_postgres = None


def shared_postgres_file():
    """The fixture's file ($SDGATE_TEST_PG_FILE), or None when this run has none."""
    path = os.environ.get("SDGATE_TEST_PG_FILE")
    return path if path and os.path.exists(path) else None


def postgres():
    """This test process's PostgreSQL server: ctest's shared one when
    $SDGATE_TEST_PG_FILE names it, else one of its own started on first use."""
    global _postgres
    if _postgres is None or _postgres.closed:
        shared = shared_postgres_file()
        _postgres = SharedPostgres(shared) if shared else Postgres()
    return _postgres


def start_postgres():
    """A PostgreSQL server of its own (a test that stops or restarts it)."""
    return Postgres()


def _sql_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def db_query(db, sql, params=()):
    """Reads a balancer's store directly, on either engine: db is a
    Program's .db (a file or a URL); sql uses ? placeholders and standard
    SQL. The rows as tuples (PostgreSQL's as text; None for NULL). A store
    that cannot be read (yet) raises."""
    if "://" in db:
        parts = sql.split("?")
        if len(parts) - 1 != len(params):
            raise ValueError("placeholders and params differ")
        text = parts[0] + "".join(_sql_literal(v) + rest for v, rest in zip(params, parts[1:]))
        return [tuple(r) for r in psql_query(db, text)]
    import sqlite3
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def db_dump(db):
    """Everything a balancer's store holds, as bytes, on either engine (a
    check that something is not stored): a SQLite file and its WAL as they
    are on disk (JSON text is stored as is), or pg_dump's data of the
    database at a URL."""
    if "://" in db:
        pg_dump = os.path.join(pg_bin_dir(), "pg_dump")
        p = subprocess.run([pg_dump if os.path.exists(pg_dump) else "pg_dump", "--data-only", "-d", db],
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError("pg_dump: %s" % p.stderr.decode(errors="replace").strip())
        return p.stdout
    out = b""
    for suffix in ("", "-wal"):
        try:
            with open(db + suffix, "rb") as f:
                out += f.read()
        except OSError:
            pass
    return out


def static_backend_arg(url, **identity):
    """A --backend value: URL plus identity in the fragment
    (provider=..&location=..&gpu_class=..&price_per_hour=..&slots=..)."""
    if not identity:
        return url
    return url + "#" + "&".join("%s=%s" % (k, v) for k, v in identity.items())


def wait_until(fn, timeout=30.0, interval=0.05):
    """Calls fn() until it returns something truthy or timeout passes;
    returns the last value. Connection errors count as falsy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = fn()
        except (OSError, httpclient.HTTPException):
            v = None
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def is_hex_id(v, n=32):
    return isinstance(v, str) and len(v) == n and all(c in "0123456789abcdef" for c in v.lower())


def is_sdgate_error(reply, status, code=None):
    """True when reply is `status` with sdgate's error shape
    {"detail": str, "error": {"code": str, "message": str, ...}} (and code)."""
    if reply is None or reply.status != status or not isinstance(reply.json, dict):
        return False
    e = reply.json.get("error")
    ok = (isinstance(reply.json.get("detail"), str) and isinstance(e, dict)
          and isinstance(e.get("code"), str) and isinstance(e.get("message"), str))
    return ok and (code is None or e.get("code") == code)


def error_code(reply):
    try:
        return reply.json["error"]["code"]
    except (TypeError, KeyError):
        return None


def submit_job(bal_url, body, headers=None, timeout=30):
    """POST /v1/jobs. Returns the Reply."""
    return request("POST", bal_url + "/v1/jobs", json_body=body, headers=headers, timeout=timeout)


def get_job(bal_url, job_id, timeout=30):
    """GET /v1/jobs/{id}: the document (dict) or None when not 200."""
    r = request("GET", bal_url + "/v1/jobs/" + job_id, timeout=timeout)
    return r.json if r.status == 200 and isinstance(r.json, dict) else None


def wait_job(bal_url, job_id, statuses=FINAL_STATES, timeout=JOB_TIMEOUT_S, interval=0.05):
    """Polls GET /v1/jobs/{id} until its status is in statuses; returns the
    last document seen (check its status) or None."""
    last = [None]

    def poll():
        d = get_job(bal_url, job_id)
        if d is not None:
            last[0] = d
        return d is not None and d.get("status") in statuses

    wait_until(poll, timeout, interval)
    return last[0]


def board(bal_url):
    """GET /v1/backends → the list of backends (or None)."""
    r = request("GET", bal_url + "/v1/backends", timeout=10)
    if r.status == 200 and isinstance(r.json, dict) and isinstance(r.json.get("backends"), list):
        return r.json["backends"]
    return None


def wait_board(bal_url, pred, timeout=30.0):
    """Waits until pred(list of backends) is true; returns the list (or the
    last one seen, for failure details)."""
    last = [None]

    def poll():
        b = board(bal_url)
        last[0] = b
        return b is not None and pred(b)

    ok = wait_until(poll, timeout, 0.1)
    return last[0] if ok else (last[0] if last[0] is not None else [])


def wait_idle_backends(bal_url, n, timeout=30.0):
    """Waits until the board lists at least n backends in state idle; True if so."""
    b = wait_board(bal_url, lambda bs: sum(1 for x in bs if x.get("state") == "idle") >= n, timeout)
    return sum(1 for x in (b or []) if x.get("state") == "idle") >= n


def board_entry(backends, **match):
    for x in backends or []:
        if all(x.get(k) == v for k, v in match.items()):
            return x
    return None


def read_registration(path):
    """A backend's --registration-file as a dict, or None (absent, not JSON)."""
    try:
        with open(path, "rb") as f:
            d = json.loads(f.read().decode("utf-8"))
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def backend_token(be):
    """What a registered backend takes as the balancer's Bearer: its
    .token when a test set one, else the backend_token in its
    --registration-file as it is now (it changes when the backend registers
    anew); None for a backend without either (open to all)."""
    if getattr(be, "token", None):
        return be.token
    path = getattr(be, "registration_file", None)
    reg = read_registration(path) if path else None
    return reg.get("backend_token") if reg else None


def backend_progress(be, timeout=10):
    """A backend's own GET /sdapi/v1/progress (skip_current_image=true) JSON,
    or None; as its balancer (backend_token) when it is registered."""
    tok = backend_token(be)
    hdrs = {"Authorization": "Bearer " + tok} if tok else None
    r = request("GET", be.url + "/sdapi/v1/progress?skip_current_image=true", headers=hdrs, timeout=timeout)
    return r.json if r.status == 200 and isinstance(r.json, dict) else None


def backend_step(be):
    """The sampling step the backend is at, -1 when idle or unknown."""
    p = backend_progress(be)
    st = p.get("state") if p else None
    if not isinstance(st, dict) or not st.get("job_count"):
        return -1
    return st.get("sampling_step", -1) if is_int(st.get("sampling_step")) else -1


def backend_idle(be):
    p = backend_progress(be)
    st = p.get("state") if p else None
    return isinstance(st, dict) and st.get("job_count") == 0 and p.get("progress") == 0


def parse_metrics(text):
    """Prometheus text → {(name, ((label, value), ...)): float}. Raises
    ValueError on a line that is not a sample, comment or blank."""
    out = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
    label = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = sample.match(line)
        if not m:
            raise ValueError("not a Prometheus sample line: %r" % line)
        labels = tuple(sorted(label.findall(m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metrics(bal_url):
    """GET /metrics parsed (see parse_metrics); raises on a bad answer."""
    r = request("GET", bal_url + "/metrics", timeout=10)
    if r.status != 200:
        raise RuntimeError("GET /metrics answered %s" % r.status)
    return parse_metrics(r.raw.decode("utf-8"))


def metric(m, name, default=None, **labels):
    return m.get((name, tuple(sorted(labels.items()))), default)


class EventStream:
    """GET url as Server-Sent Events, read on a thread. .events is a list of
    (name, data, monotonic time) with data parsed as JSON when it is JSON;
    .ids beside it: each event's id: field (a string, or None); .retry: the
    last retry: field; .ended is set when the server closed the stream;
    .status/.headers are the response's."""

    def __init__(self, url, timeout=60.0, headers=None):
        self.url = url
        self.events = []
        self.ids = []
        self.retry = None
        self.comments = []
        self.status = None
        self.headers = {}
        self.body = b""
        self.ended = False
        self.error = None
        self._conn = None
        self._cv = threading.Condition()
        self._timeout = timeout
        self._headers = dict(headers or {})
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        u = urllib.parse.urlsplit(self.url)
        try:
            self._conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=self._timeout)
            hdrs = {"Accept": "text/event-stream"}
            hdrs.update(self._headers)
            self._conn.request("GET", u.path + ("?" + u.query if u.query else ""), headers=hdrs)
            resp = self._conn.getresponse()
            with self._cv:
                self.status = resp.status
                self.headers = {k.lower(): v for k, v in resp.getheaders()}
                self._cv.notify_all()
            if resp.status != 200:
                self.body = resp.read()
                return
            name, data, eid = None, [], None
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.decode("utf-8", "replace").rstrip("\r\n")
                if line == "":
                    if name is not None or data:
                        text = "\n".join(data)
                        try:
                            parsed = json.loads(text)
                        except ValueError:
                            parsed = text
                        with self._cv:
                            self.events.append((name or "message", parsed, time.monotonic()))
                            self.ids.append(eid)
                            self._cv.notify_all()
                    name, data, eid = None, [], None
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    field, _, value = line.partition(":")
                    if value.startswith(" "):
                        value = value[1:]
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)
                    elif field == "id":
                        eid = value
                    elif field == "retry":
                        self.retry = value
        except Exception as e:  # noqa: BLE001 - recorded for the test to report
            self.error = e
        finally:
            with self._cv:
                self.ended = True
                self._cv.notify_all()
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass

    def names(self):
        with self._cv:
            return [e[0] for e in self.events]

    def wait_for(self, pred, timeout=JOB_TIMEOUT_S):
        """Waits until pred(events) is true or the stream ended; returns pred's value."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                v = pred(list(self.events))
                if v or self.ended:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self._cv.wait(min(left, 0.5))

    def wait_event(self, name, timeout=JOB_TIMEOUT_S):
        return self.wait_for(lambda evs: any(e[0] == name for e in evs), timeout)

    def wait_end(self, timeout=JOB_TIMEOUT_S):
        """True when the server ended the stream within timeout."""
        self.thread.join(timeout)
        return self.ended

    def wait_headers(self, timeout=30):
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.status is None and not self.ended and time.monotonic() < deadline:
                self._cv.wait(0.2)
        return self.status

    def close(self):
        try:
            if self._conn is not None and self._conn.sock is not None:
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server:
    """A ThreadingHTTPServer on a free loopback port, serving handler_cls."""

    def __init__(self, handler_cls):
        from http.server import ThreadingHTTPServer
        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that hung up (the balancer cancelling a call) is not news

        self.httpd = Quiet(("127.0.0.1", 0), handler_cls)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.closed = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        _servers.append(self)

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.httpd.shutdown()
            self.httpd.server_close()
        except Exception:  # noqa: BLE001
            pass


def _handler_base():
    from http.server import BaseHTTPRequestHandler

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def read_body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n > 0 else b""

        def send(self, status, body, ctype="application/json", headers=None):
            if not isinstance(body, bytes):
                body = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return H


class TcpProxy:
    """A TCP pass-through on a free port to target_port. .accepted counts the
    connections it accepted; .sent holds, per connection, the first 64 KiB a
    client sent through it (its requests); cut() closes every open
    connection at once (a network blip). hold_stream_end: a connection that
    carried a done event passes nothing more (the end of the event stream is
    held back, as from a balancer that does not end it)."""

    def __init__(self, target_port, hold_stream_end=False):
        self.target = target_port
        self.hold = hold_stream_end
        self.accepted = 0
        self.sent = []
        self.open = []
        self.lock = threading.Lock()
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                c.close()
                continue
            u.settimeout(None)
            head = bytearray()
            with self.lock:
                self.sent.append(head)
                self.open += [c, u]
            for a, b, hold, rec in ((c, u, False, head), (u, c, self.hold, None)):
                threading.Thread(target=self._pipe, args=(a, b, hold, rec), daemon=True).start()

    def cut(self):
        """Closes every connection open now (both sides)."""
        with self.lock:
            socks, self.open = self.open, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _pipe(src, dst, hold, rec):
        held = False
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if rec is not None and len(rec) < 65536:
                    rec += data[:65536 - len(rec)]
                if held:
                    continue
                if hold and b"event: done" in data:
                    held = True
                    if data.endswith(b"\r\n0\r\n\r\n"):  # the chunked stream's end
                        data = data[:-5]
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RecordingProxy(_Server):
    """An HTTP proxy in front of one backend that records every POST
    /sdapi/v1/txt2img it forwards: .calls is a list of dicts {start, end,
    request (parsed body), status}; .max_inflight is the most txt2img calls
    it ever had open at once. Everything else is forwarded unrecorded."""

    def __init__(self, target_url):
        self.target = urllib.parse.urlsplit(target_url)
        self.calls = []
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        base = _handler_base()
        proxy = self

        class H(base):
            def _forward(self):
                body = self.read_body()
                is_job = self.command == "POST" and self.path.startswith("/sdapi/v1/txt2img")
                rec = None
                if is_job:
                    try:
                        req = json.loads(body.decode("utf-8"))
                    except ValueError:
                        req = None
                    rec = {"start": time.monotonic(), "end": None, "request": req, "status": None}
                    with proxy.lock:
                        proxy.inflight += 1
                        proxy.max_inflight = max(proxy.max_inflight, proxy.inflight)
                        proxy.calls.append(rec)
                status, rbody, ctype = 502, b'{"detail":"proxy: backend unreachable"}', "application/json"
                try:
                    c = httpclient.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=300)
                    try:
                        hdrs = {"Content-Type": self.headers.get("Content-Type") or "application/json"}
                        c.request(self.command, self.path, body=body if body else None, headers=hdrs)
                        r = c.getresponse()
                        status, rbody = r.status, r.read()
                        ctype = r.getheader("Content-Type") or "application/json"
                    finally:
                        c.close()
                except (OSError, httpclient.HTTPException):
                    pass
                if rec is not None:
                    with proxy.lock:
                        rec["end"] = time.monotonic()
                        rec["status"] = status
                        proxy.inflight -= 1
                self.send(status, rbody, ctype)

            do_GET = do_POST = do_DELETE = do_PUT = _forward

        super().__init__(H)

    def overlaps(self):
        """Pairs of txt2img calls whose [start, end] intervals overlap."""
        with self.lock:
            calls = sorted((c for c in self.calls), key=lambda c: c["start"])
        out = []
        for a, b in zip(calls, calls[1:]):
            if a["end"] is None or b["start"] < a["end"]:
                out.append((a, b))
        return out


class FakeBackend(_Server):
    """A minimal A1111-like backend for failure cases. It answers ping, info
    (gpu_class as given), sd-models, options, progress (idle), interrupt;
    POST /sdapi/v1/txt2img answers txt2img_status with txt2img_body (bytes
    go as they are; a callable is called with the call's number, from 1, and
    its result sent), after txt2img_delay seconds. .txt2img_calls counts the
    txt2img calls. For a provider that misbehaves in other ways
    (evil_backend.py): info_extra is merged into its /sdgate/v1/info;
    txt2img_reply(handler, n), when given, answers the call itself (headers,
    streaming); progress_reply(n) gives the n-th progress answer's JSON."""

    def __init__(self, gpu_class="fakegpu", provider="fake", txt2img_status=500,
                 txt2img_body=None, txt2img_delay=0.0, info_extra=None, txt2img_reply=None, progress_reply=None):
        self.txt2img_delay = txt2img_delay  # seconds before answering (a hung backend)
        self.gpu_class = gpu_class
        self.provider = provider
        self.txt2img_status = txt2img_status
        self.txt2img_body = txt2img_body if txt2img_body is not None else {"detail": "fake failure"}
        self.txt2img_calls = 0
        self.progress_calls = 0
        self.info_extra = info_extra or {}
        self.txt2img_reply = txt2img_reply
        self.progress_reply = progress_reply
        self.lock = threading.Lock()
        model = {"title": "sdgate-procedural-base-v1.builtin [9917535daf]", "model_name": "sdgate-procedural-base-v1",
                 "hash": "9917535daf", "sha256": None, "filename": "builtin", "config": None}
        base = _handler_base()
        fake = self

        class H(base):
            def do_GET(self):
                p = self.path.split("?")[0]
                if p == "/internal/ping":
                    self.send(200, {})
                elif p == "/sdgate/v1/info":
                    self.send(200, dict({"provider": fake.provider, "location": "nowhere", "gpu": fake.gpu_class,
                                         "gpu_class": fake.gpu_class, "engine": "fake", "models": [model["title"]],
                                         "slots": 1, "version": "0"}, **fake.info_extra))
                elif p == "/sdapi/v1/sd-models":
                    self.send(200, [model])
                elif p == "/sdapi/v1/options":
                    self.send(200, {"sd_model_checkpoint": model["title"]})
                elif p == "/sdapi/v1/progress" and fake.progress_reply:
                    with fake.lock:
                        fake.progress_calls += 1
                        n = fake.progress_calls
                    self.send(200, fake.progress_reply(n))
                elif p == "/sdapi/v1/progress":
                    self.send(200, {"progress": 0, "eta_relative": 0, "state": {
                        "skipped": False, "interrupted": False, "job": "", "job_count": 0, "job_timestamp": "0",
                        "job_no": 0, "sampling_step": 0, "sampling_steps": 0}, "current_image": None,
                        "textinfo": None})
                else:
                    self.send(404, {"detail": "Not Found"})

            def do_POST(self):
                self.read_body()
                p = self.path.split("?")[0]
                if p == "/sdapi/v1/txt2img":
                    with fake.lock:
                        fake.txt2img_calls += 1
                        n = fake.txt2img_calls
                    if fake.txt2img_delay > 0:
                        time.sleep(fake.txt2img_delay)
                    if fake.txt2img_reply:
                        fake.txt2img_reply(self, n)
                        return
                    body = fake.txt2img_body
                    self.send(fake.txt2img_status, body(n) if callable(body) else body)
                elif p in ("/sdapi/v1/interrupt", "/sdapi/v1/skip"):
                    self.send(200, {})
                else:
                    self.send(404, {"detail": "Not Found"})

        super().__init__(H)


def job_images(bal_url, doc_or_event):
    """The bytes of a done job's images (list), fetched from the URLs its
    document's result (or its `done` event) lists; None when any is missing
    or does not answer 200."""
    try:
        d = doc_or_event
        entries = d["result"]["images"] if "result" in d else d["images"]
        out = []
        for e in entries:
            r = request("GET", bal_url + e["url"], timeout=60)
            if r.status != 200:
                return None
            out.append(r.raw)
        return out
    except (TypeError, KeyError, ValueError, AttributeError, OSError, httpclient.HTTPException):
        return None


def job_info(doc):
    """The parsed info of a done job document's result, or None."""
    try:
        info = doc["result"]["info"]
        return json.loads(info) if isinstance(info, str) else (info if isinstance(info, dict) else None)
    except (TypeError, KeyError, ValueError):
        return None


# ---------------------------------------------------------------- NGINX

NGINX_CONF = os.path.join(SOURCE_ROOT, "deploy", "nginx", "sdgate.conf")
NGINX_PG_CONF = os.path.join(SOURCE_ROOT, "deploy", "nginx", "sdgate-postgresql.conf")


def nginx_path():
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def render_nginx_conf(conf, gateways, balancers, web_port, api_port):
    """The shipped config (sdgate.conf: two balancers, sdgate-postgresql.conf:
    three) with this run's addresses: the upstream servers in order, and the
    two listen ports."""
    text = open(conf).read()
    for old, new in zip(["127.0.0.1:8080", "127.0.0.1:8081"], gateways):
        text = text.replace("server %s " % old, "server 127.0.0.1:%d " % new, 1)
    for old, new in zip(["127.0.0.1:7860", "127.0.0.1:7870", "127.0.0.1:7880"], balancers):
        text = text.replace("server %s " % old, "server 127.0.0.1:%d " % new, 1)
    text = re.sub(r"listen 80;", "listen 127.0.0.1:%d;" % web_port, text)
    text = re.sub(r"listen 7800;", "listen 127.0.0.1:%d;" % api_port, text)
    return text


class Nginx:
    """Debian's nginx on a site config (text), with its own prefix, pid and logs in
    a temp dir: never the system service. .stop() ends it."""

    def __init__(self, site):
        self.dir = tmpdir("nginx")
        with open(os.path.join(self.dir, "sdgate.conf"), "w") as f:
            f.write(site)
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write("worker_processes 1;\nerror_log %s/error.log warn;\npid %s/nginx.pid;\n"
                    "events { worker_connections 1024; }\n"
                    "http {\n  access_log off;\n  client_body_temp_path %s/body;\n"
                    "  proxy_temp_path %s/proxy;\n  fastcgi_temp_path %s/fcgi;\n  uwsgi_temp_path %s/uwsgi;\n"
                    "  scgi_temp_path %s/scgi;\n  include %s/sdgate.conf;\n}\n"
                    % ((self.dir,) * 8))
        self.proc = subprocess.Popen([nginx_path() or "nginx", "-p", self.dir, "-c",
                                      os.path.join(self.dir, "nginx.conf"), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def log(self, tail=3000):
        """The last tail characters of its error log."""
        try:
            return open(os.path.join(self.dir, "error.log")).read()[-tail:]
        except OSError:
            return ""

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def nginx_pg_front(balancers, gateway_port=None):
    """NGINX on sdgate-postgresql.conf in front of the three balancers (ports)
    and, on its web port, gateway_port's gateway; checked up through the
    balancer port. Returns (Nginx, the balancer port's URL)."""
    gw_port = gateway_port or free_port()
    web_port, api_port = free_port(), free_port()
    ngx = Nginx(render_nginx_conf(NGINX_PG_CONF, [gw_port, gw_port], balancers, web_port, api_port))
    api = "http://127.0.0.1:%d" % api_port
    check("NGINX serves sdgate-postgresql.conf in front of the three balancers",
          wait_until(lambda: request("GET", api + "/healthz", timeout=5).status == 200, 20), ngx.log())
    return ngx, api


def start_native_and_a1111(name, pace_ms, load_ms=100):
    """A native backend (provider "native", a100, --pace-ms-per-step
    pace_ms), the stand-in plain A1111 1.10 in this process (provider
    "a1111", rtx4090; a1111_standin.py, recording the bodies it receives)
    and a balancer over both, up. Returns (a1111 server, record file,
    backend, balancer)."""
    import a1111_standin
    record = os.path.join(tmpdir(name), "a1111.jsonl")
    a1111 = a1111_standin.serve(0, step_ms=5, load_ms=load_ms, record=record)
    a_url = "http://127.0.0.1:%d" % a1111.server_address[1]
    be = start_backend("--pace-ms-per-step", pace_ms, "--provider", "native", "--gpu-class", "a100")
    bal = start_balancer("--progress-interval-ms", 50, "--backend", be.url + "#provider=native&gpu_class=a100",
                         "--backend", a_url + "#provider=a1111&gpu_class=rtx4090")
    check("the native backend and the stand-in A1111 come up", wait_idle_backends(bal.url, 2), board(bal.url))
    return a1111, record, be, bal

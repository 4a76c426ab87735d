#!/usr/bin/env python3
"""test_docs_contracts.py — the contracts in docs/ agree with the code
(issue 12 item 7). No program runs; the sources are read:
- every error code of common/error.c (the one table) with an HTTP status is in
  docs/jobs-api.md's error table with that status; every one without (the
  gateway's websocket-only codes, status 0) is in docs/websocket.md;
- every error code the gateway sends on the websocket (validate_error_set and
  emit_error calls in gateway/*.c, by sd_error_code(SDE_...)) is in
  docs/websocket.md, and the gateway names no code but through the table;
- no tracked source, script or document points outside the repository to the
  starting design (DESIGN.md, ../shared/): docs/ holds the contracts now."""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

ROOT = t.SOURCE_ROOT


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def error_table():
    """[(enum name, code, status)] of common/error.c."""
    return [(e, c, int(st)) for e, c, st in
            re.findall(r'\[(SDE_\w+)\]\s*=\s*\{"(\w+)",\s*(\d+),', read("common/error.c")) if c != "ok"]


def check_error_table():
    table = error_table()
    codes = [(c, s) for _, c, s in table if s]
    ws_only = [c for _, c, s in table if not s]
    doc = read("docs/jobs-api.md")
    rows = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `(\w+)` \| (\d{3}) \|", doc, re.M)}
    print("common/error.c: %d codes with an HTTP status, %d websocket-only; docs/jobs-api.md: %d table rows"
          % (len(codes), len(ws_only), len(rows)))
    t.check("common/error.c's table was read (at least 20 codes)", len(codes) >= 20, codes)
    missing = [c for c, _ in codes if c not in rows]
    t.check("every code of common/error.c with a status is in docs/jobs-api.md's table", not missing, missing)
    wrong = [(c, s, rows[c]) for c, s in codes if c in rows and rows[c] != s]
    t.check("each with the status common/error.c gives it", not wrong, wrong)
    ws = read("docs/websocket.md")
    missing = [c for c in ws_only if "`%s`" % c not in ws]
    t.check("every websocket-only code of common/error.c is in docs/websocket.md", not missing, missing)


def check_gateway_codes():
    src = "".join(read(os.path.join("gateway", f)) for f in sorted(os.listdir(os.path.join(ROOT, "gateway")))
                  if f.endswith(".c"))
    names = {e: c for e, c, _ in error_table()}
    used = set(re.findall(r"sd_error_code\((SDE_\w+)\)", src))
    unknown = sorted(e for e in used if e not in names)
    codes = {names[e] for e in used if e in names}
    literal = re.findall(r'(?:validate_error_set\(\s*&?[\w>.-]+,\s*[^,]+,|emit_error\(\s*\w+,\s*\w+,)\s*"(\w+)"', src)
    doc = read("docs/websocket.md")
    print("gateway/*.c: %d error codes sent on the websocket, by the table" % len(codes))
    t.check("the gateway's error codes were read (at least 10)", len(codes) >= 10, sorted(codes))
    t.check("the gateway names its codes through common/error.c's table (no literal code, no unknown name)",
            not literal and not unknown, (literal, unknown))
    missing = sorted(c for c in codes if "`%s`" % c not in doc)
    t.check("every error code the gateway sends is in docs/websocket.md", not missing, missing)


def check_no_outside_refs():
    try:
        files = subprocess.run(["git", "-C", ROOT, "ls-files"], capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(ROOT):
            dirs[:] = [x for x in dirs if x != "node_modules" and not x.startswith(("build", "."))]
            files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names]
    exts = (".c", ".h", ".cu", ".py", ".md", ".js", ".sh", ".txt", ".yaml", ".conf")
    me = os.path.relpath(os.path.abspath(__file__), ROOT)
    pattern = re.compile(r"DESIGN\.md|\.\./shared/|(?<![\w/])shared/(DESIGN|STYLE|LIBRARIES)")
    bad = []
    for rel in files:
        if not rel.endswith(exts) or "node_modules" in rel or rel == me:
            continue
        try:
            text = read(rel)
        except (OSError, UnicodeDecodeError):
            continue
        bad += sorted({"%s:%d" % (rel, text.count("\n", 0, m.start()) + 1) for m in pattern.finditer(text)})
    print("%d tracked files read for references outside the repository" % len(files))
    t.check("no file points to DESIGN.md or ../shared/ (the contracts are in docs/)", not bad, bad)


def main():
    check_error_table()
    check_gateway_codes()
    check_no_outside_refs()


if __name__ == "__main__":
    t.run(main)

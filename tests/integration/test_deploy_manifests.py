#!/usr/bin/env python3
"""The deployment files, checked: every Akash SDL in sdl/ and every
Kubernetes manifest in deploy/k8s/ (the three balancers on PostgreSQL, and
the SQLite single-balancer option in deploy/k8s/sqlite/) parsed with a real
YAML parser (PyYAML) and checked for the structure and fields that matter;
both NGINX configs through `nginx -t`; the systemd units through
`systemd-analyze verify`; the container files' stages and users; and the
container entry point for real (it starts a backend from SDGATE_* variables,
whose identity then shows in /sdgate/v1/info)."""

import glob
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

try:
    import yaml
except ImportError:  # deploy/install-deps.sh installs python3-yaml
    yaml = None

ROOT = t.SOURCE_ROOT
GPU_MODELS = {"l40", "a100", "rtx3090", "h100"}
SECRET_RE = re.compile(r"(TOKEN|SECRET|PASSWORD)[A-Z_]*=(.+)$")


def no_real_secrets(name, env):
    """Every token-like variable is empty or the CHANGE_ME placeholder."""
    bad = []
    for e in env or []:
        m = SECRET_RE.search(str(e))
        if m and m.group(2) not in ("CHANGE_ME", ""):
            bad.append(e)
    t.check("%s: no real secret in env (placeholders only)" % name, not bad, bad)


def check_sdl(path):
    name = os.path.relpath(path, ROOT)
    d = yaml.safe_load(open(path))
    t.check("%s: version \"2.0\"" % name, d.get("version") == "2.0", d.get("version"))
    services, profiles, deployment = d.get("services", {}), d.get("profiles", {}), d.get("deployment", {})
    compute, placement = profiles.get("compute", {}), profiles.get("placement", {})
    t.check("%s: services, profiles.compute, profiles.placement and deployment are non-empty" % name,
            all([services, compute, placement, deployment]))
    for sname, s in services.items():
        t.check("%s: service %s has an image and an expose list" % (name, sname),
                isinstance(s.get("image"), str) and s["image"] and isinstance(s.get("expose"), list), s)
        for e in s.get("expose", []):
            t.check("%s: %s exposes an integer port to someone" % (name, sname),
                    isinstance(e.get("port"), int) and isinstance(e.get("to"), list) and e["to"], e)
        no_real_secrets("%s %s" % (name, sname), s.get("env"))
        t.check("%s: service %s is deployed" % (name, sname), sname in deployment, list(deployment))
    for sname, groups in deployment.items():
        t.check("%s: deployment %s names a service" % (name, sname), sname in services)
        for group, spec in groups.items():
            prof = spec.get("profile")
            t.check("%s: %s → placement %s exists" % (name, sname, group), group in placement, list(placement))
            t.check("%s: %s → compute profile %s exists" % (name, sname, prof), prof in compute, list(compute))
            pricing = placement.get(group, {}).get("pricing", {}).get(prof, {})
            t.check("%s: %s is priced in %s (denom and amount)" % (name, prof, group),
                    pricing.get("denom") in ("uakt", "uact") or str(pricing.get("denom", "")).startswith("ibc/"),
                    pricing)
            t.check("%s: count ≥ 1" % name, isinstance(spec.get("count"), int) and spec["count"] >= 1, spec)
    for pname, p in compute.items():
        r = p.get("resources", {})
        t.check("%s: profile %s has cpu units, memory size and storage" % (name, pname),
                "units" in r.get("cpu", {}) and "size" in r.get("memory", {}) and r.get("storage"), r)
    return d


def env_of(service):
    """An SDL service's env as a dict."""
    return dict(e.split("=", 1) for e in service.get("env", []) if "=" in e)


def check_front_postgresql(front):
    """front.yaml: several balancers on one PostgreSQL service whose data is
    on persistent storage, reachable by the balancers only."""
    services, compute = front["services"], front["profiles"]["compute"]
    bal, pg = services["balancer"], services.get("postgres")
    if not t.check("front: a postgres service", pg is not None, list(services)):
        return
    benv, penv = env_of(bal), env_of(pg)
    t.check("front: the postgres image is the official Debian-based one (postgres:N-bookworm)",
            re.match(r"^postgres:\d+(\.\d+)?-bookworm$", pg["image"]), pg["image"])
    t.check("front: postgres is exposed to the balancer only",
            all(x.get("service") == "balancer" and not x.get("global") for e in pg["expose"] for x in e["to"]) and
            {e["port"] for e in pg["expose"]} == {5432}, pg["expose"])
    m = re.match(r"^postgresql://(\w+)@postgres:5432/(\w+)$", benv.get("SDGATE_DB", ""))
    t.check("front: the balancers' SDGATE_DB is the postgres service's URL, without a password",
            m and m.groups() == (penv.get("POSTGRES_USER"), penv.get("POSTGRES_DB")), (benv.get("SDGATE_DB"), penv))
    t.check("front: the password is a placeholder on both sides (PGPASSWORD, POSTGRES_PASSWORD)",
            benv.get("PGPASSWORD") == "CHANGE_ME" and penv.get("POSTGRES_PASSWORD") == "CHANGE_ME", (benv, penv))
    storage = compute["postgres"]["resources"]["storage"]
    persistent = [x for x in storage if isinstance(x, dict) and x.get("attributes", {}).get("persistent")]
    mount = pg.get("params", {}).get("storage", {})
    cls = persistent[0]["attributes"].get("class") if persistent else None
    t.check("front: postgres keeps its data on persistent storage (class beta2 or beta3) mounted above PGDATA",
            len(persistent) == 1 and cls in ("beta2", "beta3") and persistent[0].get("name") in mount and
            penv.get("PGDATA", "").startswith(mount[persistent[0]["name"]]["mount"].rstrip("/") + "/"),
            (storage, mount, penv.get("PGDATA")))
    bstorage = compute["balancer"]["resources"]["storage"]
    t.check("front: the balancers have no persistent volume (each replica would get its own)",
            not any(isinstance(x, dict) and x.get("attributes", {}).get("persistent")
                    for x in (bstorage if isinstance(bstorage, list) else [bstorage])), bstorage)
    counts = {n: g["count"] for n, groups in front["deployment"].items() for g in groups.values()}
    t.check("front: several balancers (count ≥ 2), one postgres", counts.get("balancer", 0) >= 2 and
            counts.get("postgres") == 1, counts)


def sdl_gpus(d):
    out = {}
    for pname, p in d["profiles"]["compute"].items():
        gpu = p["resources"].get("gpu")
        if gpu:
            models = [m.get("model") for m in gpu.get("attributes", {}).get("vendor", {}).get("nvidia", [])]
            out[pname] = (gpu.get("units"), models)
    return out


def check_sdls():
    files = sorted(glob.glob(os.path.join(ROOT, "sdl", "*.yaml")))
    t.check("sdl/ holds the front, the per-GPU backends and the A1111 sidecar",
            {os.path.basename(f) for f in files} >= {"front.yaml", "backends.yaml", "backend-a1111.yaml"}, files)
    docs = {os.path.basename(f): check_sdl(f) for f in files}
    front = docs.get("front.yaml")
    if front:
        gw = front["services"]["gateway"]["expose"]
        t.check("front: the gateway is exposed globally as port 80",
                any(e.get("as") == 80 and any(x.get("global") for x in e["to"]) for e in gw), gw)
        bal = front["services"]["balancer"]
        t.check("front: the balancer is not exposed globally",
                not any(x.get("global") for e in bal["expose"] for x in e["to"]), bal["expose"])
        check_front_postgresql(front)
    backends = docs.get("backends.yaml")
    if backends:
        gpus = sdl_gpus(backends)
        models = {m for _, ms in gpus.values() for m in ms}
        t.check("backends: one GPU profile each for L40, A100, RTX 3090 and H100", models == GPU_MODELS and
                all(units == 1 and len(ms) == 1 for units, ms in gpus.values()), gpus)
        for pname, p in backends["profiles"]["compute"].items():
            mem = p["resources"]["memory"]["size"]
            t.check("backends: %s has at least 16Gi of RAM for SDXL-class work" % pname,
                    mem.endswith("Gi") and int(mem[:-2]) >= 16, mem)
        for sname, s in backends["services"].items():
            env = " ".join(s.get("env", []))
            t.check("backends: %s gets provider, location, balancer and token from env" % sname,
                    all(k in env for k in ("SDGATE_PROVIDER=", "SDGATE_LOCATION=", "SDGATE_BALANCER=",
                                           "SDGATE_TOKEN=")), env)
    side = docs.get("backend-a1111.yaml")
    if side:
        env = side["services"]["backend"].get("env", [])
        up = [e for e in env if e.startswith("SDGATE_UPSTREAM=")]
        t.check("sidecar: the backend forwards to the a1111 service", up == ["SDGATE_UPSTREAM=http://a1111:7860"],
                env)
        a_exp = side["services"]["a1111"]["expose"]
        t.check("sidecar: A1111 is reachable by the backend only",
                all(x.get("service") == "backend" for e in a_exp for x in e["to"]), a_exp)


def k8s_docs(files):
    docs = []
    for f in files:
        docs += [d for d in yaml.safe_load_all(open(f)) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def containers(workload):
    return workload["spec"]["template"]["spec"]["containers"]


def env_refs(container):
    """{name: ("value", v) or ("secret", (secret, key))} of a container's env."""
    out = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        out[e["name"]] = ("secret", (ref["name"], ref["key"])) if ref else ("value", e.get("value"))
    return out


def documented_secrets():
    """{secret: {keys}} that the comments of deploy/k8s/*.yaml tell how to
    create (kubectl -n sdgate create secret generic NAME --from-literal=KEY=...)."""
    out = {}
    for f in glob.glob(os.path.join(ROOT, "deploy", "k8s", "*.yaml")):
        lines = [ln.lstrip("# ").rstrip() for ln in open(f)]
        for k, ln in enumerate(lines):
            m = re.match(r"kubectl -n sdgate create secret generic ([\w-]+)", ln)
            if not m:
                continue
            command = ln
            while command.endswith("\\") and k + 1 < len(lines):  # continued on the next line
                k += 1
                command = command[:-1] + " " + lines[k]
            out[m.group(1)] = set(re.findall(r"--from-literal=(\w[\w-]*)=", command))
    return out


def check_k8s_postgresql(by, bal):
    """The balancers on a shared PostgreSQL: three, no volume of their own,
    the URL and password from the Secret that the StatefulSet's server uses."""
    t.check("k8s: three balancers (replicas 3), rolling updates",
            bal["spec"]["replicas"] == 3 and bal["spec"].get("strategy", {}).get("type", "RollingUpdate") ==
            "RollingUpdate", bal["spec"])
    vols = bal["spec"]["template"]["spec"].get("volumes", [])
    t.check("k8s: the balancers have no PersistentVolumeClaim (the database is shared)",
            not any("persistentVolumeClaim" in v for v in vols), vols)
    env = env_refs(containers(bal)[0])
    db, pw = env.get("SDGATE_DB"), env.get("PGPASSWORD")
    t.check("k8s: the balancers' SDGATE_DB and PGPASSWORD come from one Secret",
            db and pw and db[0] == pw[0] == "secret" and db[1][0] == pw[1][0], (db, pw))
    for probe in ("readinessProbe", "livenessProbe"):
        p = containers(bal)[0].get(probe, {})
        t.check("k8s: the balancers' %s is GET /healthz" % probe, p.get("httpGet", {}).get("path") == "/healthz", p)
    sts = [d for (k, _), d in by.items() if k == "StatefulSet"]
    if not t.check("k8s: one StatefulSet, PostgreSQL's", len(sts) == 1, [d["metadata"]["name"] for d in sts]):
        return
    pg = sts[0]
    c = containers(pg)[0]
    penv = env_refs(c)
    t.check("k8s: PostgreSQL is the official Debian-based image (postgres:N-bookworm)",
            re.match(r"^postgres:\d+(\.\d+)?-bookworm$", c["image"]), c["image"])
    t.check("k8s: its POSTGRES_PASSWORD is the balancers' PGPASSWORD (same Secret and key)",
            penv.get("POSTGRES_PASSWORD") == pw, (penv.get("POSTGRES_PASSWORD"), pw))
    claims = {v["metadata"]["name"] for v in pg["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    pgdata = penv.get("PGDATA", ("value", ""))[1] or ""
    t.check("k8s: its data is on a volumeClaimTemplate mounted above PGDATA",
            any(n in mounts and pgdata.startswith(mounts[n].rstrip("/") + "/") for n in claims), (claims, mounts,
                                                                                                 pgdata))
    svc = by.get(("Service", pg["spec"].get("serviceName")))
    t.check("k8s: the StatefulSet's serviceName is a Service of port 5432",
            svc is not None and any(p["port"] == 5432 for p in svc["spec"]["ports"]), pg["spec"].get("serviceName"))
    secrets = documented_secrets()
    used = {}
    for (kind, name), d in by.items():
        if kind in ("Deployment", "StatefulSet"):
            for ctr in containers(d):
                for var, (how, what) in env_refs(ctr).items():
                    if how == "secret":
                        used.setdefault(what[0], set()).add(what[1])
    missing = {n: sorted(keys - secrets.get(n, set())) for n, keys in used.items()
               if ("Secret", n) not in by and keys - secrets.get(n, set())}
    t.check("k8s: every Secret key the manifests read is created in a documented `kubectl create secret` "
            "(no Secret with a value in the repository)", not missing and
            not any(k == "Secret" for k, _ in by), (missing, secrets))
    host = re.escape(svc["metadata"]["name"] if svc else "?")
    text = "".join(open(f).read() for f in glob.glob(os.path.join(ROOT, "deploy", "k8s", "*.yaml")))
    t.check("k8s: the documented sdgate-postgresql URL names the postgresql Service and no password",
            "sdgate-postgresql" in secrets and re.search(r"--from-literal=url=postgresql://\w+@%s:5432/\w+\s" % host,
                                                         text), secrets)


def check_k8s_sqlite(base):
    """deploy/k8s/sqlite/balancer.yaml, applied instead of balancer.yaml and
    postgresql.yaml: one balancer on its SQLite file."""
    by = k8s_docs([os.path.join(ROOT, "deploy", "k8s", "sqlite", "balancer.yaml")])
    bal = by.get(("Deployment", "sdgate-balancer"))
    if not t.check("k8s/sqlite: a balancer Deployment of the same name", bal is not None, list(by)):
        return
    t.check("k8s/sqlite: it replaces the same Service (same name and selector)",
            by.get(("Service", "sdgate-balancer"), {}).get("spec") == base.get(("Service", "sdgate-balancer"),
                                                                               {}).get("spec"))
    vols = bal["spec"]["template"]["spec"].get("volumes", [])
    claims = [v["persistentVolumeClaim"]["claimName"] for v in vols if "persistentVolumeClaim" in v]
    t.check("k8s/sqlite: the balancer's db is on a PersistentVolumeClaim that exists",
            claims and ("PersistentVolumeClaim", claims[0]) in by, claims)
    mounts = {m["name"]: m["mountPath"] for m in containers(bal)[0].get("volumeMounts", [])}
    db = env_refs(containers(bal)[0]).get("SDGATE_DB", ("", ""))[1] or ""
    data = [v["name"] for v in vols if "persistentVolumeClaim" in v]
    t.check("k8s/sqlite: its SDGATE_DB is a file on that volume",
            data and data[0] in mounts and db.startswith(mounts[data[0]].rstrip("/") + "/"), (db, mounts))
    t.check("k8s/sqlite: one balancer per volume (replicas 1, Recreate)",
            bal["spec"]["replicas"] == 1 and bal["spec"]["strategy"]["type"] == "Recreate", bal["spec"])


def check_k8s():
    by = k8s_docs(sorted(glob.glob(os.path.join(ROOT, "deploy", "k8s", "*.yaml"))))
    deps = {n: d for (k, n), d in by.items() if k == "Deployment"}
    workloads = {n: d for (k, n), d in by.items() if k in ("Deployment", "StatefulSet")}
    t.check("k8s: Deployments for gateway, balancer and backend",
            set(deps) == {"sdgate-gateway", "sdgate-balancer", "sdgate-backend"}, list(deps))
    for name, d in workloads.items():
        sel = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        t.check("k8s: %s's selector matches its pod labels" % name, all(labels.get(k) == v for k, v in sel.items()),
                (sel, labels))
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if re.search("TOKEN|SECRET|PASSWORD|^SDGATE_DB$", e["name"]):
                    t.check("k8s: %s's %s comes from a Secret, not a value" % (name, e["name"]),
                            "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), e)
    for (kind, name), svc in by.items():
        if kind != "Service":
            continue
        target = [d for d in workloads.values() if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                                                       for k, v in svc["spec"]["selector"].items())]
        t.check("k8s: Service %s selects exactly one Deployment or StatefulSet" % name, len(target) == 1,
                svc["spec"]["selector"])
        if target:
            ports = {p.get("name"): p["containerPort"] for c in target[0]["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                t.check("k8s: Service %s port %s targets a container port" % (name, p["port"]),
                        p["targetPort"] in ports or p["targetPort"] in ports.values(), (p, ports))
    be = deps.get("sdgate-backend")
    if be:
        res = be["spec"]["template"]["spec"]["containers"][0]["resources"]
        t.check("k8s: backends request and limit one nvidia.com/gpu",
                res["requests"].get("nvidia.com/gpu") == 1 and res["limits"].get("nvidia.com/gpu") == 1, res)
        c = be["spec"]["template"]["spec"]["containers"][0]
        reg = [e.get("value", "") for e in c.get("env", []) if e["name"] == "SDGATE_REGISTRATION_FILE"]
        vols = {v["name"] for v in be["spec"]["template"]["spec"].get("volumes", [])}
        mounts = [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in vols]
        t.check("k8s: the backend keeps its registration file on a pod volume (survives a container restart)",
                len(reg) == 1 and any(reg[0].startswith(m.rstrip("/") + "/") for m in mounts), (reg, mounts))
    bal = deps.get("sdgate-balancer")
    if bal:
        check_k8s_postgresql(by, bal)
    check_k8s_sqlite(by)
    so = [d for (k, _), d in by.items() if k == "ScaledObject"]
    t.check("k8s: one KEDA ScaledObject", len(so) == 1, [d["metadata"]["name"] for d in so])
    if so:
        spec = so[0]["spec"]
        t.check("KEDA: it scales the backend Deployment", spec["scaleTargetRef"].get("name") == "sdgate-backend" and
                spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment", spec["scaleTargetRef"])
        t.check("KEDA: down to zero and back (minReplicaCount 0 < max)",
                spec.get("minReplicaCount") == 0 and spec.get("maxReplicaCount", 0) > 0, spec)
        trig = spec["triggers"][0]
        t.check("KEDA: a Prometheus trigger on sdgate_queue_depth",
                trig["type"] == "prometheus" and "sdgate_queue_depth" in trig["metadata"]["query"], trig)


def check_nginx():
    """Both shipped NGINX configs pass `nginx -t`, included from an http{}
    block as their comments say; the active-active one has no backup."""
    confs = {n: os.path.join(ROOT, "deploy", "nginx", n) for n in ("sdgate.conf", "sdgate-postgresql.conf")}
    pg = open(confs["sdgate-postgresql.conf"]).read()
    ups = re.search(r"upstream sdgate_balancers \{(.*?)\}", pg, re.S)
    servers = re.findall(r"^\s*server (\S+)([^;]*);", ups.group(1) if ups else "", re.M)
    t.check("sdgate-postgresql.conf: three balancers, all equal (no backup, no down)",
            len(servers) == 3 and not any(re.search(r"\b(backup|down)\b", o) for _, o in servers) and
            len({o for _, o in servers}) == 1, servers)
    # non_idempotent: POST /v1/jobs only when the client sent a key (the named location), and the façade's
    # POSTs, which always get one (the client's, else NGINX's $request_id)
    retried = re.findall(r"location ([^{]*)\{([^}]*non_idempotent[^}]*)\}", pg)
    keyed = re.search(r"map \$http_idempotency_key \$sdgate_idempotency_key \{\s*''\s+\$request_id;", pg)
    t.check("sdgate-postgresql.conf: POSTs are passed on after sending only under an Idempotency-Key",
            pg.count("non_idempotent") == 2 and len(retried) == 2 and keyed and "$http_idempotency_key" in pg and
            any(w.startswith("@") for w, _ in retried) and
            any("txt2img" in w and "proxy_set_header Idempotency-Key $sdgate_idempotency_key;" in body
                for w, body in retried), retried)
    if not t.check("nginx is installed (deploy/install-deps.sh installs nginx-light)", t.nginx_path()):
        return
    for name, path in confs.items():
        d = t.tmpdir("nginx-t")
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write("worker_processes 1;\npid %s/nginx.pid;\nevents { worker_connections 64; }\nhttp {\n"
                    "  access_log off;\n  client_body_temp_path %s/body;\n  proxy_temp_path %s/proxy;\n"
                    "  fastcgi_temp_path %s/fcgi;\n  uwsgi_temp_path %s/uwsgi;\n  scgi_temp_path %s/scgi;\n"
                    "  include %s;\n}\n" % ((d,) * 6 + (path,)))
        r = subprocess.run([t.nginx_path(), "-t", "-q", "-e", os.path.join(d, "error.log"), "-p", d, "-c",
                            os.path.join(d, "nginx.conf")], capture_output=True, text=True, timeout=30)
        t.check("nginx -t accepts deploy/nginx/%s" % name, r.returncode == 0, r.stdout + r.stderr)


def check_systemd():
    units = sorted(glob.glob(os.path.join(ROOT, "deploy", "systemd", "*.service")))
    t.check("systemd: units for the three programs",
            {os.path.basename(u) for u in units} == {"sdgate-gateway.service", "sdgate-balancer.service",
                                                     "sdgate-backend.service"}, units)
    backend = open(os.path.join(ROOT, "deploy", "systemd", "sdgate-backend.service")).read()
    state = re.findall(r"^StateDirectory=(\S+)$", backend, re.M)
    t.check("systemd: the backend keeps its registration file in its StateDirectory",
            state and re.search(r"^Environment=SDGATE_REGISTRATION_FILE=/var/lib/%s/\S+$" % re.escape(state[0]),
                                backend, re.M), state)
    dropin = os.path.join(ROOT, "deploy", "systemd", "sdgate-.service.d", "hardening.conf")
    text = open(dropin).read()
    for opt in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=",
                "SystemCallFilter=@system-service", "RestrictAddressFamilies="):
        t.check("systemd: the shared hardening sets %s" % opt, opt in text)
    analyze = shutil.which("systemd-analyze")
    if not t.check("systemd-analyze is installed (Debian package systemd, from deploy/install-deps.sh)",
                   analyze, "not on PATH: run deploy/install-deps.sh; `systemd-analyze verify` cannot run"):
        return
    # verify needs ExecStart to exist: point it at a real executable in a copy.
    work = t.tmpdir("units")
    shutil.copytree(os.path.dirname(dropin), os.path.join(work, "sdgate-.service.d"))
    for u in units:
        with open(u) as f, open(os.path.join(work, os.path.basename(u)), "w") as g:
            g.write(f.read().replace("/usr/local/bin/sdgate-entrypoint", shutil.which("true")))
    r = subprocess.run([analyze, "verify", "--man=no"] + sorted(glob.glob(os.path.join(work, "*.service"))),
                       capture_output=True, text=True, env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
    t.check("systemd-analyze verify: the units and the drop-in load without a warning",
            r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr)


def check_dockerfiles():
    for name, base in (("Dockerfile.front", "debian:bookworm-slim"), ("Dockerfile.backend", "nvidia/cuda:13")):
        text = open(os.path.join(ROOT, "deploy", "docker", name)).read()
        froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
        t.check("%s: multi-stage (a build stage, then the runtime image)" % name, len(froms) >= 2, froms)
        t.check("%s: the runtime stage is %s…" % (name, base), froms and froms[-1].startswith(base), froms)
        t.check("%s: it runs as a non-root user" % name, re.search(r"^USER\s+(?!root)\S+", text, re.M))
        t.check("%s: its entry point is sdgate-entrypoint" % name, "sdgate-entrypoint" in text)


def check_entrypoint():
    exe = os.path.join(t.BIN_DIR, "backend", "sdgate-backend")
    port = t.free_port()
    env = {"SDGATE_EXE": exe, "SDGATE_LISTEN": "127.0.0.1:%d" % port, "SDGATE_PROVIDER": "Acme GPUs",
           "SDGATE_LOCATION": "Berlin, DE", "SDGATE_GPU_CLASS": "a100", "SDGATE_PRICE_PER_HOUR": "1.5",
           "SDGATE_BALANCER": "", "SDGATE_TOKEN": ""}
    os.environ.update(env)
    try:
        prog = t.Program("entrypoint-backend", ["sh", os.path.join(ROOT, "deploy", "docker", "sdgate-entrypoint.sh"),
                                                "backend"], port)
    finally:
        for k in env:
            os.environ.pop(k, None)
    t.check("sdgate-entrypoint starts a backend from SDGATE_* variables", t.wait_ready(prog, "/internal/ping"),
            prog.log_tail())
    info = t.request("GET", prog.url + "/sdgate/v1/info", timeout=10).json or {}
    t.check("…whose identity is the variables' (values with spaces and commas intact)",
            info.get("provider") == "Acme GPUs" and info.get("location") == "Berlin, DE" and
            info.get("gpu_class") == "a100" and info.get("price_per_hour") == 1.5, info)
    prog.stop()
    # Tokens stay in the environment: the program reads them itself.
    token = "entrypoint-token-0123456789"
    regfile = os.path.join(t.tmpdir("entry-reg"), "registration.json")
    env = dict(env, SDGATE_TOKEN=token, SDGATE_BALANCER="http://127.0.0.1:%d" % t.free_port(),
               SDGATE_REGISTRATION_FILE=regfile)
    os.environ.update(env)
    try:
        prog = t.Program("entrypoint-backend-token", ["sh", os.path.join(ROOT, "deploy", "docker",
                                                                         "sdgate-entrypoint.sh"), "backend"], port)
    finally:
        for k in env:
            os.environ.pop(k, None)
    up = t.wait_ready(prog, "/internal/ping")
    with open("/proc/%d/cmdline" % prog.proc.pid, "rb") as f:
        argv = f.read().decode("utf-8", "replace")
    t.check("sdgate-entrypoint passes SDGATE_TOKEN in the environment, not as a flag (not in /proc/<pid>/cmdline)",
            up and token not in argv and "--token" not in argv, argv)
    t.check("sdgate-entrypoint passes SDGATE_REGISTRATION_FILE as --registration-file",
            "--registration-file\0%s\0" % regfile in argv, argv)
    prog.stop()
    r = subprocess.run(["sh", os.path.join(ROOT, "deploy", "docker", "sdgate-entrypoint.sh"), "balancer"],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, SDGATE_EXE=os.path.join(t.BIN_DIR, "balancer", "sdgate-balancer"),
                                SDGATE_PROVIDER_TOKEN="CHANGE_ME", SDGATE_LISTEN="127.0.0.1:%d" % t.free_port(),
                                SDGATE_DB=os.path.join(t.tmpdir("entry-db"), "b.db")))
    t.check("the shipped placeholder SDGATE_PROVIDER_TOKEN=CHANGE_ME is refused at start (exit 2)",
            r.returncode == 2 and "CHANGE_ME" in r.stderr, (r.returncode, r.stderr[-300:]))
    entry = os.path.join(ROOT, "deploy", "docker", "sdgate-entrypoint.sh")
    base = dict(os.environ, SDGATE_EXE=shutil.which("echo") or "/bin/echo", SDGATE_DB="postgresql://sdgate@db/sdgate")
    r = subprocess.run(["sh", entry, "balancer"], capture_output=True, text=True, timeout=30,
                       env=dict(base, SDGATE_LEASE_S="6", SDGATE_DB_WAIT_S="120", PGPASSWORD="a-real-one"))
    t.check("sdgate-entrypoint passes SDGATE_DB, SDGATE_LEASE_S and SDGATE_DB_WAIT_S as --db, --lease-s, "
            "--db-wait-s (and PGPASSWORD not at all)",
            r.returncode == 0 and "--db postgresql://sdgate@db/sdgate " in r.stdout and "--lease-s 6" in r.stdout and
            "--db-wait-s 120" in r.stdout and "a-real-one" not in r.stdout, (r.returncode, r.stdout, r.stderr))
    r = subprocess.run(["sh", entry, "balancer"], capture_output=True, text=True, timeout=30,
                       env=dict(base, PGPASSWORD="CHANGE_ME"))
    t.check("the shipped placeholder PGPASSWORD=CHANGE_ME is refused at start (exit 2)",
            r.returncode == 2 and "CHANGE_ME" in r.stderr and not r.stdout, (r.returncode, r.stdout, r.stderr))
    r = subprocess.run(["sh", os.path.join(ROOT, "deploy", "docker", "sdgate-entrypoint.sh"), "nonsense"],
                       capture_output=True, text=True)
    t.check("sdgate-entrypoint refuses an unknown program with exit code 2", r.returncode == 2, r.stderr)


def main():
    t.check("PyYAML is available (deploy/install-deps.sh installs python3-yaml)", yaml is not None)
    if yaml is None:
        return
    check_sdls()
    check_k8s()
    check_nginx()
    check_systemd()
    check_dockerfiles()
    check_entrypoint()


if __name__ == "__main__":
    t.run(main)

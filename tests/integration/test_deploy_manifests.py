#!/usr/bin/env python3
"""The deployment files, checked: every Akash SDL in sdl/ and every
Kubernetes manifest in deploy/k8s/ parsed with a real YAML parser (PyYAML)
and checked for the structure and fields that matter; the systemd units
through `systemd-analyze verify`; the container files' stages and users; and
the container entry point for real (it starts a backend from SDGATE_*
variables, whose identity then shows in /sdgate/v1/info)."""

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
        storage = front["profiles"]["compute"]["balancer"]["resources"]["storage"]
        persistent = [s for s in storage if isinstance(s, dict) and s.get("attributes", {}).get("persistent")]
        mount = bal.get("params", {}).get("storage", {})
        t.check("front: the balancer has persistent storage mounted where its db lives",
                persistent and persistent[0].get("name") in mount and
                any("SDGATE_DB=" + mount[persistent[0]["name"]]["mount"] in e for e in bal.get("env", [])),
                (storage, mount))
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


def check_k8s():
    docs = []
    for f in sorted(glob.glob(os.path.join(ROOT, "deploy", "k8s", "*.yaml"))):
        docs += [d for d in yaml.safe_load_all(open(f)) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deps = {n: d for (k, n), d in by.items() if k == "Deployment"}
    t.check("k8s: Deployments for gateway, balancer and backend",
            set(deps) == {"sdgate-gateway", "sdgate-balancer", "sdgate-backend"}, list(deps))
    for name, d in deps.items():
        sel = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        t.check("k8s: %s's selector matches its pod labels" % name, all(labels.get(k) == v for k, v in sel.items()),
                (sel, labels))
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if re.search("TOKEN|SECRET", e["name"]):
                    t.check("k8s: %s's %s comes from a Secret, not a value" % (name, e["name"]),
                            "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), e)
    for (kind, name), svc in by.items():
        if kind != "Service":
            continue
        target = [d for d in deps.values() if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                                                  for k, v in svc["spec"]["selector"].items())]
        t.check("k8s: Service %s selects exactly one Deployment" % name, len(target) == 1, svc["spec"]["selector"])
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
        vols = bal["spec"]["template"]["spec"].get("volumes", [])
        claims = [v["persistentVolumeClaim"]["claimName"] for v in vols if "persistentVolumeClaim" in v]
        t.check("k8s: the balancer's db is on a PersistentVolumeClaim that exists",
                claims and ("PersistentVolumeClaim", claims[0]) in by, claims)
        t.check("k8s: one balancer per volume (replicas 1, Recreate)",
                bal["spec"]["replicas"] == 1 and bal["spec"]["strategy"]["type"] == "Recreate", bal["spec"])
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
    r = subprocess.run(["sh", os.path.join(ROOT, "deploy", "docker", "sdgate-entrypoint.sh"), "nonsense"],
                       capture_output=True, text=True)
    t.check("sdgate-entrypoint refuses an unknown program with exit code 2", r.returncode == 2, r.stderr)


def main():
    t.check("PyYAML is available (deploy/install-deps.sh installs python3-yaml)", yaml is not None)
    if yaml is None:
        return
    check_sdls()
    check_k8s()
    check_systemd()
    check_dockerfiles()
    check_entrypoint()


if __name__ == "__main__":
    t.run(main)

import os, subprocess, sys, time, json, statistics, shutil
ROOT = "/work/wt-21"; PY = "/work/main/.venv/bin/python"
env = {**os.environ, "PYTHONPATH": ROOT, "SEGNET_CACHE": "/tmp/i21/cache-bench"}
runs = {
 "segnet-console fp32": [PY, "-m", "segnet", "-q", "--backend", "onnxruntime", "--precision", "fp32", "/tmp/i21/imgs48/", "/tmp/i21/out-fp32/"],
 "segnet-console int8": [PY, "-m", "segnet", "-q", "--backend", "onnxruntime", "--precision", "int8", "/tmp/i21/imgs48/", "/tmp/i21/out-int8/"],
 "plain PIL+onnxruntime+numpy": [PY, f"{ROOT}/tools/plain-pipeline", f"{ROOT}/models/fcn-resnet18-camvid-480x352", "/tmp/i21/imgs48", "/tmp/i21/out-plain"],
}
def timed(cmd):
    start = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=ROOT)
    _, status, ru = os.wait4(p.pid, 0)
    assert status == 0, cmd
    return time.perf_counter() - start, ru.ru_utime + ru.ru_stime
rounds = int(sys.argv[1])
res = {k: [] for k in runs}
for r in range(rounds):
    for k, cmd in runs.items():
        res[k].append(timed(cmd)); print(r, k, res[k][-1], os.getloadavg()[0], flush=True)
out = {}
for k, v in res.items():
    walls = [w for w, _ in v]; cpus = [c for _, c in v]
    out[k] = {"wall_median": statistics.median(walls), "wall_min": min(walls), "cpu_median": statistics.median(cpus), "walls": walls, "cpus": cpus}
    print(f"{k:<30} wall median {out[k]['wall_median']:.2f} min {out[k]['wall_min']:.2f} cpu median {out[k]['cpu_median']:.2f}")
json.dump(out, open(sys.argv[2], "w"), indent=1)

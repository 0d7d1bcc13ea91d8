#!/usr/bin/env bash
# The CUDA paths, run on a real GPU: one prepared check, everything it finds written into OUTDIR.
#
#   bash scripts/gpu_check.sh OUTDIR              # on a machine with one CUDA GPU; gpu_pack/ made beforehand
#   bash scripts/gpu_check.sh --dry-run OUTDIR    # the same steps on the CPU with tiny sizes (or MINIMTL_GPU_DRY_RUN=1)
#
# gpu_pack/ (python scripts/gpu_pack.py; git-ignored, so carry it to the GPU machine) holds the default weights in
# float16 and the SNIPS, CoNLL-2003 and AG News files. The steps, each under its own `timeout` and all within
# MINIMTL_GPU_BUDGET_S seconds (450 by default: under 8 minutes with the start-up); a step that fails, times out
# or finds no time left is recorded as such and the next one runs:
#   env              GPU name, torch and CUDA versions, CPU                                 -> env.json
#   restore          the pack checked against its manifest; its float16 weights back to float32 (--weights);
#                    on a machine without weights/all-MiniLM-L6-v2 a copy goes there too, for the tests and the
#                    benchmark that read the default weights (minimtl's sha256 check told to accept it: gpu_pack.py)
#   tests            python -m pytest -k "cuda or gpu or bf16" over tests/test_cuda.py and the suite's
#                    CUDA-conditional files (test_precision, test_inference_precision, test_bad_inputs)
#                                                                               -> pytest.xml, test_cuda_measurements.json
#   snips_full       train.py --data SNIPS --device cuda, the default recipe (full fine-tuning) -> results/snips_full.json
#   conll_ag_frozen  train.py --data CoNLL-2003 --data AG News --freeze backbone --device cuda; the feature cache's
#                    seconds from its "feature cache:" log line                  -> results/conll_ag_frozen.json
#   bench_train_step tests/benchmarks/bench_train_step.py --quick (it has no device option: it times on the CPU)
#                                                                               -> bench_train_step.json
#   infer_*          infer.py --file on 2,048 SNIPS sentences, fp32 and bf16 alternating, 3 runs each (infer.py
#                    has no device option either: the CPU); sentences/s = 2048 / wall seconds, median
#   torchrun         torchrun --standalone --nproc_per_node 1 train.py --device cuda, 1 epoch of the demo data
# and after every step OUTDIR/gpu_check.json is rewritten with all that is known so far ("finished": true at
# the end). Logs: OUTDIR/logs/STEP.{out,err,cmd}. Runs and restored weights go to a temporary folder (removed at
# the end; MINIMTL_GPU_WORK=DIR keeps them in DIR), so OUTDIR stays small.
#
# Dry run: --device cpu, the shipped demo data (MINIMTL_GPU_DRY_DATA=DIR for another), 1 epoch, 16 sentences and
# one run per precision for the throughput, the CUDA tests only collected (they skip), the benchmark's --help
# only, torchrun with gloo on the CPU.
#
# Environment: MINIMTL_GPU_PACK (default gpu_pack), MINIMTL_GPU_WEIGHTS (a float32 checkpoint to use instead of
# restoring one), MINIMTL_GPU_BUDGET_S, MINIMTL_GPU_WORK, MINIMTL_GPU_DRY_DATA, MINIMTL_GPU_INFER_N,
# MINIMTL_GPU_INFER_REPEATS, MINIMTL_GPU_BENCH_ARGS (default "--quick --repeats 3").
# Commands are `python` from PATH, run from the repo root.

set -u -o pipefail

usage() { sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

DRY=${MINIMTL_GPU_DRY_RUN:-0}
[ "$DRY" = 1 ] || DRY=0
OUTDIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) if [ -n "$OUTDIR" ]; then echo "gpu_check.sh: one OUTDIR, not '$OUTDIR' and '$1'" >&2; exit 2; fi
       OUTDIR=$1 ;;
  esac
  shift
done
if [ -z "$OUTDIR" ]; then usage >&2; exit 2; fi

# Paths the caller gave are relative to the caller's directory: made absolute before the cd.
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
PACK=$(realpath -m "${MINIMTL_GPU_PACK:-$(dirname "${BASH_SOURCE[0]}")/../gpu_pack}")
GIVEN_WEIGHTS=${MINIMTL_GPU_WEIGHTS:+$(realpath -m "$MINIMTL_GPU_WEIGHTS")}
DRY_DATA=${MINIMTL_GPU_DRY_DATA:+$(realpath -m "$MINIMTL_GPU_DRY_DATA")}
if [ -n "${MINIMTL_GPU_WORK:-}" ]; then WORK=$(realpath -m "$MINIMTL_GPU_WORK"); KEEP_WORK=1; mkdir -p "$WORK" || exit 2
else WORK=$(mktemp -d "${TMPDIR:-/tmp}/minimtl-gpu-check.XXXXXX") || exit 2; KEEP_WORK=0; fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; BUDGET=${MINIMTL_GPU_BUDGET_S:-240}
  INFER_N=${MINIMTL_GPU_INFER_N:-16}; INFER_REPEATS=${MINIMTL_GPU_INFER_REPEATS:-1}
else
  DEVICE=cuda; BUDGET=${MINIMTL_GPU_BUDGET_S:-450}
  INFER_N=${MINIMTL_GPU_INFER_N:-2048}; INFER_REPEATS=${MINIMTL_GPU_INFER_REPEATS:-3}
fi
BENCH_ARGS=${MINIMTL_GPU_BENCH_ARGS:---quick --repeats 3}
RESERVE=8    # seconds kept back at the end for gpu_check.json
MIN_STEP=10  # a step with less time than this left is skipped
LOGS=$OUTDIR/logs
mkdir -p "$LOGS" "$OUTDIR/results" "$WORK/runs" || exit 2
STEPS=$OUTDIR/steps.tsv
: > "$STEPS"
rm -f "$OUTDIR/gpu_check.json" "$OUTDIR/test_cuda_measurements.json" "$OUTDIR/pytest.xml" \
      "$OUTDIR/bench_train_step.json" "$OUTDIR/env.json"
START_EPOCH=$(date +%s.%N)
DEFAULT_WEIGHTS=$REPO/weights/all-MiniLM-L6-v2
CREATED_DEFAULT=0
RESTORED_DEFAULT=""

cleanup() {
  if [ "$CREATED_DEFAULT" = 1 ]; then rm -rf "$DEFAULT_WEIGHTS"; fi
  if [ "$KEEP_WORK" = 0 ]; then rm -rf "$WORK"; fi
  for f in "${BENCH_RESTORE[@]:-}"; do [ -n "$f" ] && eval "$f"; done
}
BENCH_RESTORE=()
trap cleanup EXIT
trap 'exit 143' TERM INT

# --- helpers ----------------------------------------------------------------------------------------------------

# run_step NAME LIMIT_S CMD... : CMD under `timeout`, stdout/stderr into logs/NAME.{out,err} (stdout into
# $STEP_STDOUT instead when set), one line in steps.tsv: name, status, exit code, seconds, timeout, note.
run_step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - SECONDS - RESERVE ))
  local t=$(( limit < left ? limit : left ))
  printf '%q ' "$@" > "$LOGS/$name.cmd"
  if (( t < MIN_STEP )); then
    printf '%s\tskipped\t\t0\t0\tout of time: %ss left of the %ss budget\n' "$name" "$left" "$BUDGET" >> "$STEPS"
    echo "[gpu_check] $name: skipped (out of time)"
    return 99
  fi
  echo "[gpu_check] $name (timeout ${t}s): $*"
  local start end rc status
  start=$(date +%s.%N)
  timeout -k 5 "$t" "$@" > "${STEP_STDOUT:-$LOGS/$name.out}" 2> "$LOGS/$name.err" < /dev/null
  rc=$?
  end=$(date +%s.%N)
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" \
    "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')" "$t" "${STEP_NOTE:-}" >> "$STEPS"
  echo "[gpu_check] $name: $status (exit $rc)"
  return $rc
}

skip_step() {  # NAME WHY
  printf '%s\tskipped\t\t0\t0\t%s\n' "$1" "$2" >> "$STEPS"
  echo "[gpu_check] $1: skipped ($2)"
}

write_json() {  # gpu_check.json from everything recorded so far; FINISHED=1 at the end
  FINISHED=${1:-0} python "$WORK/assemble.py" || echo "[gpu_check] could not write gpu_check.json" >&2
}

# The JSON is put together by this Python file (no torch import: fast, and it works when torch does not).
cat > "$WORK/assemble.py" <<'PY'
import json, os, re, statistics, time
import xml.etree.ElementTree as ET
from pathlib import Path

E = os.environ
out, logs = Path(E["OUTDIR"]), Path(E["OUTDIR"]) / "logs"
dry = E["DRY"] == "1"


def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def tail(path, n=2000):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-n:]


steps = {}
for line in (out / "steps.tsv").read_text(encoding="utf-8").splitlines():
    name, status, rc, seconds, timeout, note = (line.split("\t") + [""] * 6)[:6]
    step = {"status": status, "exit_status": int(rc) if rc else None, "seconds": float(seconds or 0),
            "timeout_s": int(timeout or 0)}
    cmd = logs / f"{name}.cmd"
    if cmd.is_file():
        step["command"] = cmd.read_text(encoding="utf-8").strip()
    if note:
        step["note"] = note
    if status in ("failed", "timeout"):
        step["stderr_tail"] = tail(logs / f"{name}.err")
        if not step["stderr_tail"].strip():
            step["stdout_tail"] = tail(logs / f"{name}.out")
    steps[name] = step


def brief(scores):
    """results.json scores without the per-type entries ("entity_f1/LOC", "conll2003/entity_f1/LOC"); with
    several sources the other keys are "source/metric"."""
    if not isinstance(scores, dict):
        return scores
    return {k: brief(v) for k, v in scores.items()
            if not (len(k.split("/")) >= 2 and k.split("/")[-2].startswith("entity_"))}


def run_summary(name):
    s = dict(steps.get(name, {"status": "not run"}))
    s.pop("stderr_tail", None), s.pop("stdout_tail", None), s.pop("command", None)
    r = read_json(out / "results" / f"{name}.json")
    if r is not None:
        s.update(best_epoch=r.get("best_epoch"), dev=brief(r.get("dev")), test=brief(r.get("test")),
                 calibration=(r.get("calibration") or {}).get("test"))
    s["wall_s"] = s.get("seconds")
    return s


env = read_json(out / "env.json") or {}
result = {
    "finished": E.get("FINISHED") == "1",
    "dry_run": dry,
    "device": E["DEVICE"],
    "gpu_name": env.get("gpu_name"),
    "torch_version": env.get("torch"),
    "cuda_version": env.get("cuda"),
    "budget_s": int(E["BUDGET"]),
    "elapsed_s": round(time.time() - float(E["START_EPOCH"]), 1),
    "env": env,
}

# restore: the pack and the weights every later step uses
restore = {"pack": E["PACK"], "weights": E.get("WEIGHTS") or None,
           "default_weights_for_tests": E.get("RESTORED_DEFAULT") or None}
manifest = read_json(Path(E["PACK"]) / "manifest.json")
if manifest:
    restore.update(pack_total_mib=manifest.get("total_mib"), pack_files=len(manifest.get("files", {})),
                   data={k: {s: f"{v['taken']}/{v['of']} {v['unit']}s" for s, v in d["splits"].items()}
                         for k, d in manifest.get("data", {}).items()})
for line in reversed(tail(logs / "restore.out", 4000).splitlines()):
    if line.startswith("{"):
        try:
            restore["restored"] = json.loads(line)
        except ValueError:
            pass
        break
result["restore"] = {**steps.get("restore", {"status": "not run"}), **restore}

# tests: pytest's JUnit XML, and what test_cuda.py measured
tests = dict(steps.get("tests", {"status": "not run"}))
try:
    root = ET.parse(out / "pytest.xml").getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failed, skipped = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = [c.tag for c in case]
        if "failure" in kinds or "error" in kinds:
            counts["failed" if "failure" in kinds else "errors"] += 1
            el = case.find("failure") if "failure" in kinds else case.find("error")
            failed.append({"test": name, "message": (el.get("message") or "")[:500]})
        elif "skipped" in kinds:
            counts["skipped"] += 1
            why = (case.find("skipped").get("message") or "")[:200]
            skipped[why] = skipped.get(why, 0) + 1
        else:
            counts["passed"] += 1
    tests.update(counts=counts, failures=failed, skip_reasons=skipped)
except (OSError, ET.ParseError):
    pass
tests["selection"] = E.get("TEST_SELECTION", "")
tests["measurements"] = read_json(out / "test_cuda_measurements.json")
result["tests"] = tests

result["snips_full"] = run_summary("snips_full")
frozen = run_summary("conll_ag_frozen")
cache_line = next((l for l in tail(logs / "conll_ag_frozen.out", 10**7).splitlines()
                   if l.startswith("feature cache:") and "encoded" in l), None)
m = re.search(r"encoded ([\d,]+) sentences once in ([\d.]+)s", cache_line or "")
frozen.update(feature_cache_line=cache_line, feature_cache_s=float(m.group(2)) if m else None,
              feature_cache_sentences=int(m.group(1).replace(",", "")) if m else None)
result["conll_ag_frozen"] = frozen

bench = dict(steps.get("bench_train_step", {"status": "not run"}))
bench["device"] = "cpu"
bench["note"] = ("tests/benchmarks/bench_train_step.py has no device option: it builds both models on the CPU and "
                 "times them there (torch.autocast('cpu') for its bf16 rows), on this GPU machine's CPU"
                 + ("; dry run: only its --help" if dry else ""))
b = read_json(out / "bench_train_step.json")
if b:
    bench.update(args=b.get("args"), sentences=b.get("sentences"), skipped=b.get("skipped"),
                 machine=b.get("machine"), matmul_gflops=(b.get("matmul_gflops") or {}).get("median"),
                 runs={k: {"sentences_per_s": v.get("sentences_per_s"), "ratio_vs_theirs": v.get("ratio_vs_theirs"),
                           "ratio_vs_theirs_fused": v.get("ratio_vs_theirs_fused"), "seconds": v.get("seconds")}
                       for k, v in (b.get("runs") or {}).items()})
result["bench_train_step"] = bench

n = int(E["INFER_N"])
infer = {"sentences": n, "device": "cpu", "checkpoint": E.get("INFER_CHECKPOINT") or None,
         "note": "infer.py has no --device flag: it predicts on the CPU (of this GPU machine); sentences/s = "
                 f"{n} / the command's wall seconds (start-up and model loading included); fp32 and bf16 alternate"}
for p in ("fp32", "bf16"):
    runs = [(k, v) for k, v in steps.items() if re.fullmatch(f"infer_{p}_\\d+", k)]
    ok = [v["seconds"] for k, v in runs if v["status"] == "ok"]
    infer[p] = {"runs": [{"step": k, "status": v["status"], "exit_status": v["exit_status"], "seconds": v["seconds"],
                          "lines_out": read_json(logs / f"{k}.lines")} for k, v in runs],
                "median_s": statistics.median(ok) if ok else None,
                "sentences_per_s": n / statistics.median(ok) if ok else None}
    bad = next((v for k, v in runs if v["status"] != "ok"), None)
    if bad:
        infer[p]["stderr_tail"] = bad.get("stderr_tail", "")
if "infer" in steps:
    infer["status"] = steps["infer"]["status"]
    infer["why"] = steps["infer"].get("note")
result["infer_throughput"] = infer

torchrun = dict(steps.get("torchrun", {"status": "not run"}))
torchrun["backend"] = "gloo" if E["DEVICE"] == "cpu" else "nccl"
torchrun["wall_s"] = torchrun.get("seconds")
result["torchrun"] = torchrun
result["steps"] = steps

tmp = out / "gpu_check.json.tmp"
tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
tmp.replace(out / "gpu_check.json")

def summary():
    print(f"[gpu_check] summary ({result['device']}, {result['gpu_name']}, torch {result['torch_version']}, "
          f"CUDA {result['cuda_version']}, {result['elapsed_s']}s):")
    for name, s in steps.items():
        print(f"  {name:<18} {s['status']:<8} {s['seconds']:7.1f}s" +
              (f"  exit {s['exit_status']}" if s["status"] not in ("ok", "skipped") else "") +
              (f"  ({s['note']})" if s.get("note") else ""))
    if tests.get("counts"):
        print(f"  tests: {tests['counts']}" + "".join(f"\n    FAILED {f['test']}" for f in tests["failures"]))
    for name in ("snips_full", "conll_ag_frozen"):
        if result[name].get("test"):
            print(f"  {name} test: " + ", ".join(f"{k} {v:.4f}" for k, v in result[name]["test"].items()
                                                  if isinstance(v, float)))
    if frozen.get("feature_cache_s") is not None:
        print(f"  feature cache: {frozen['feature_cache_s']}s for {frozen['feature_cache_sentences']} sentences")
    print(f"  infer.py sentences/s (cpu): fp32 {infer['fp32']['sentences_per_s']}, bf16 {infer['bf16']['sentences_per_s']}")
    for k, v in (bench.get("runs") or {}).items():
        print(f"  bench {k}: {v['sentences_per_s']:.1f} sentences/s, x{v['ratio_vs_theirs']:.2f} vs transformers")


if result["finished"]:  # a short summary on stdout, for whoever reads only the tail of the output
    try:
        summary()
    except Exception as e:  # the JSON is written; the summary is only a courtesy
        print(f"[gpu_check] (no summary: {e!r})")
PY

cat > "$WORK/env.py" <<'PY'
import json, os, platform, subprocess, sys
from importlib import metadata

info = {"python": platform.python_version(), "executable": sys.executable,
        "cpus": len(os.sched_getaffinity(0))}
try:
    info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    info["cpu"] = platform.processor()
for package in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pytest", "hypothesis", "seqeval"):
    try:
        info[f"{package}_installed"] = metadata.version(package)
    except metadata.PackageNotFoundError:
        info[f"{package}_installed"] = None
try:
    info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    info["git_commit"] = None
import torch
info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            torch_threads=torch.get_num_threads())
try:
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
except (AttributeError, RuntimeError):
    info["cpu_capability"] = None
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(gpu_name=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                gpu_capability=list(torch.cuda.get_device_capability(0)),
                gpu_memory_gib=round(props.total_memory / 2**30, 1), gpu_bf16=torch.cuda.is_bf16_supported())
else:
    info["gpu_name"] = None
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    info["nvidia_smi"] = smi.stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    info["nvidia_smi"] = None
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
PY

cat > "$WORK/two_sources.py" <<'PY'
# Dry run: a JSONL data folder (tokens, tags, label) as two sources shaped like the real ones, an NER-only
# CoNLL folder (conll2003/) and a classification-only CSV folder with classes.txt (ag_news/), so that the frozen
# step trains on two --data sources as it does on the GPU.
import json, sys
from pathlib import Path
src, dest = Path(sys.argv[1]), Path(sys.argv[2])
records = {s: [json.loads(l) for l in (src / f"{s}.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
           for s in ("train", "dev", "test") if (src / f"{s}.jsonl").is_file()}
classes = sorted({r["label"] for rs in records.values() for r in rs})
(dest / "conll2003").mkdir(parents=True)
(dest / "ag_news").mkdir(parents=True)
for split, rs in records.items():
    (dest / "conll2003" / f"{split}.txt").write_text("".join(
        "-DOCSTART- -X- -X- O\n\n" * (i % 4 == 0) + "".join(f"{w} {t}\n" for w, t in zip(r["tokens"], r["tags"])) + "\n"
        for i, r in enumerate(rs)), encoding="utf-8")
    (dest / "ag_news" / f"{split}.csv").write_text("".join(
        '"' + " ".join(r["tokens"]).replace('"', '""') + f'",{classes.index(r["label"])}\n' for r in rs), encoding="utf-8")
(dest / "ag_news" / "classes.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")
print(f"{src} -> {dest}/conll2003 (NER) and {dest}/ag_news (labels): " + ", ".join(f"{s} {len(r)}" for s, r in records.items()))
PY

cat > "$WORK/sentences.py" <<'PY'
# N non-blank sentences, one per line, from a data folder: SNIPS train/seq.in, or JSONL tokens / text.
import json, sys
from pathlib import Path
data, n, dest = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
lines = []
if (data / "train" / "seq.in").is_file():
    lines = (data / "train" / "seq.in").read_text(encoding="utf-8").splitlines()
else:
    for split in ("train", "dev", "test"):
        f = data / f"{split}.jsonl"
        if f.is_file():
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    lines.append(" ".join(r["tokens"]) if "tokens" in r else r["text"])
lines = [l.strip() for l in lines if l.strip()][:n]
if len(lines) < n:
    sys.exit(f"only {len(lines)} sentences in {data}, {n} asked for")
dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
print(f"{len(lines)} sentences from {data} -> {dest}")
PY

export OUTDIR DRY DEVICE BUDGET PACK START_EPOCH INFER_N
export WEIGHTS="" RESTORED_DEFAULT="" INFER_CHECKPOINT="" TEST_SELECTION=""
echo "[gpu_check] $( [ "$DRY" = 1 ] && echo "dry run on the CPU" || echo "on CUDA" ), budget ${BUDGET}s, out $OUTDIR, work $WORK"

# --- 0. the machine ---------------------------------------------------------------------------------------------
run_step env 60 python "$WORK/env.py" "$OUTDIR/env.json"
write_json

# --- 1. restore the weights -------------------------------------------------------------------------------------
if [ -n "$GIVEN_WEIGHTS" ]; then
  WEIGHTS=$GIVEN_WEIGHTS
  skip_step restore "MINIMTL_GPU_WEIGHTS given: $WEIGHTS"
else
  WEIGHTS_NAME=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["weights"]["name"])' \
                 "$PACK/manifest.json" 2>/dev/null) || WEIGHTS_NAME=all-MiniLM-L6-v2
  WEIGHTS=$WORK/weights/$WEIGHTS_NAME
  if run_step restore 90 python scripts/gpu_pack.py --pack "$PACK" --restore "$WEIGHTS" --overwrite; then
    # The tests' fixtures and the benchmark ask minimtl for the default weights, which would download them:
    # without network, give them the restored copy (only where there are none; removed again at the end).
    if [ "$DRY" = 0 ] && [ ! -e "$DEFAULT_WEIGHTS" ] && [ "$WEIGHTS_NAME" = all-MiniLM-L6-v2 ]; then
      mkdir -p "$(dirname "$DEFAULT_WEIGHTS")" && cp -r "$WEIGHTS" "$DEFAULT_WEIGHTS" && CREATED_DEFAULT=1 \
        && RESTORED_DEFAULT=$DEFAULT_WEIGHTS
    fi
  fi
fi
export WEIGHTS RESTORED_DEFAULT
write_json

if [ "$DRY" = 1 ]; then
  DATA_DEMO=${DRY_DATA:-$REPO/minimtl/demo}
  SNIPS_DATA=(--data "$DATA_DEMO"); SHORT=(--epochs 1)
  if python "$WORK/two_sources.py" "$DATA_DEMO" "$WORK/dry_sources" > "$LOGS/two_sources.out" 2>&1; then
    FROZEN_DATA=(--data "$WORK/dry_sources/conll2003" --data "$WORK/dry_sources/ag_news")
  else
    FROZEN_DATA=(--data "$DATA_DEMO")  # one source then; the log says why
  fi
  SENTENCES_FROM=$DATA_DEMO; TORCHRUN_DATA=(--data "$DATA_DEMO")
else
  SNIPS_DATA=(--data "$PACK/data/snips"); FROZEN_DATA=(--data "$PACK/data/conll2003" --data "$PACK/data/ag_news")
  SHORT=(); SENTENCES_FROM=$PACK/data/snips; TORCHRUN_DATA=()
fi

# --- 2. the CUDA-relevant tests ---------------------------------------------------------------------------------
# Named files, not all of tests/: a module that imports seqeval (absent on the GPU machine) would stop collection.
if [ "$DRY" = 1 ]; then
  TEST_SELECTION="tests/test_cuda.py (dry run: every test skips without CUDA)"
  TEST_ARGS=(tests/test_cuda.py)
else
  TEST_SELECTION='-k "cuda or gpu or bf16" tests/test_cuda.py tests/test_precision.py tests/test_inference_precision.py tests/test_bad_inputs.py'
  TEST_ARGS=(-k "cuda or gpu or bf16" tests/test_cuda.py tests/test_precision.py tests/test_inference_precision.py
             tests/test_bad_inputs.py)
fi
export TEST_SELECTION
run_step tests 200 env PYTHONPATH="$REPO/scripts${PYTHONPATH:+:$PYTHONPATH}" MINIMTL_GPU_OUT="$OUTDIR" \
  MINIMTL_GPU_RESTORED_DEFAULT="$RESTORED_DEFAULT" \
  python -m pytest -q -p gpu_pack -p no:cacheprovider --junitxml="$OUTDIR/pytest.xml" "${TEST_ARGS[@]}"
write_json

# --- 3. SNIPS, full fine-tuning ---------------------------------------------------------------------------------
if run_step snips_full 180 python train.py "${SNIPS_DATA[@]}" --weights "$WEIGHTS" --out "$WORK/runs/snips_full" \
     --device "$DEVICE" ${SHORT[@]+"${SHORT[@]}"}; then :; fi
cp "$WORK/runs/snips_full/results.json" "$OUTDIR/results/snips_full.json" 2>/dev/null
write_json

# --- 4. CoNLL-2003 + AG News, frozen backbone -------------------------------------------------------------------
run_step conll_ag_frozen 150 python train.py "${FROZEN_DATA[@]}" --freeze backbone --weights "$WEIGHTS" \
  --out "$WORK/runs/conll_ag_frozen" --device "$DEVICE" ${SHORT[@]+"${SHORT[@]}"}
cp "$WORK/runs/conll_ag_frozen/results.json" "$OUTDIR/results/conll_ag_frozen.json" 2>/dev/null
write_json

# --- 5a. a training step against transformers (bench_train_step.py; no device option: the CPU) -----------------
if [ "$DRY" = 1 ]; then
  run_step bench_train_step 60 python tests/benchmarks/bench_train_step.py --help
else
  # It writes tests/benchmarks/results/train_step[.quick].json: moved to OUTDIR, the tree's copies put back.
  RESULTS_DIR=$REPO/tests/benchmarks/results
  mkdir -p "$WORK/bench_backup"
  for f in train_step.json train_step.quick.json; do
    if [ -e "$RESULTS_DIR/$f" ]; then
      cp -p "$RESULTS_DIR/$f" "$WORK/bench_backup/$f" \
        && BENCH_RESTORE+=("cp -p '$WORK/bench_backup/$f' '$RESULTS_DIR/$f'")
    else
      BENCH_RESTORE+=("rm -f '$RESULTS_DIR/$f'")
    fi
  done
  # shellcheck disable=SC2086
  run_step bench_train_step 120 env MINIMTL_GPU_RESTORED_DEFAULT="$RESTORED_DEFAULT" \
    python scripts/gpu_pack.py --exec tests/benchmarks/bench_train_step.py $BENCH_ARGS --data "$PACK/data/snips"
  for f in train_step.quick.json train_step.json; do
    if [ -e "$RESULTS_DIR/$f" ] && ! cmp -s "$RESULTS_DIR/$f" "$WORK/bench_backup/$f"; then
      cp "$RESULTS_DIR/$f" "$OUTDIR/bench_train_step.json"; break
    fi
  done
  for f in "${BENCH_RESTORE[@]}"; do eval "$f"; done
  BENCH_RESTORE=()
fi
write_json

# --- 5b. infer.py --file throughput, fp32 and bf16 alternating --------------------------------------------------
for candidate in "$WORK/runs/snips_full" "$WORK/runs/conll_ag_frozen"; do
  if [ -f "$candidate/model.safetensors" ]; then INFER_CHECKPOINT=$candidate; break; fi
done
export INFER_CHECKPOINT
TEXTS=$WORK/infer_texts.txt
if [ -z "$INFER_CHECKPOINT" ]; then
  skip_step infer "no checkpoint: the training steps before did not finish"
elif ! python "$WORK/sentences.py" "$SENTENCES_FROM" "$INFER_N" "$TEXTS" > "$LOGS/infer_texts.out" 2>&1; then
  skip_step infer "could not write $INFER_N sentences from $SENTENCES_FROM: $(tail -c 300 "$LOGS/infer_texts.out" | tr '\t\n' '  ')"
else
  for r in $(seq 1 "$INFER_REPEATS"); do
    for p in fp32 bf16; do
      STEP_STDOUT=$WORK/infer_${p}_$r.out run_step "infer_${p}_$r" 60 \
        python infer.py --checkpoint "$INFER_CHECKPOINT" --file "$TEXTS" --precision "$p" --json
      wc -l < "$WORK/infer_${p}_$r.out" 2>/dev/null | tr -d ' ' > "$LOGS/infer_${p}_$r.lines"
      [ -s "$LOGS/infer_${p}_$r.lines" ] || echo null > "$LOGS/infer_${p}_$r.lines"
    done
  done
fi
write_json

# --- 6. torchrun, one process -----------------------------------------------------------------------------------
if command -v torchrun > /dev/null 2>&1; then TORCHRUN=(torchrun); else TORCHRUN=(python -m torch.distributed.run); fi
run_step torchrun 120 "${TORCHRUN[@]}" --standalone --nproc_per_node 1 train.py ${TORCHRUN_DATA[@]+"${TORCHRUN_DATA[@]}"} \
  --weights "$WEIGHTS" --out "$WORK/runs/torchrun" --device "$DEVICE" --epochs 1
cp "$WORK/runs/torchrun/results.json" "$OUTDIR/results/torchrun.json" 2>/dev/null

write_json 1
echo "[gpu_check] wrote $OUTDIR/gpu_check.json in ${SECONDS}s"
exit 0

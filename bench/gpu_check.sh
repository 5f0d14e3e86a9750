#!/usr/bin/env bash
# The GPU figures of docs/speed.md in one call: every benchmark on CUDA, each under its own time
# limit so that one slow bench cannot eat the others' time, each one's output in OUT/NAME.txt and a
# summary of the result lines at the end. The limits add up to 9 min 40 s (580 s), inside one 10-minute call.
#
#   MEDSYN_BENCH_DATA=DIR bench/gpu_check.sh OUT          # DIR: the MedMNIST .npz files
#   SMALL=1 DEVICE=cpu bench/gpu_check.sh /tmp/rehearsal   # every command at toy sizes, on CPU
#
# The GPU machine gets the repository alone (no ../shared beside it): copy the .npz files it needs
# (breastmnist_64.npz, pneumoniamnist.npz) into an ignored folder of the checkout, carry it, and
# name it in MEDSYN_BENCH_DATA. medsyn itself must import there (e.g. PYTHONPATH=src with the
# missing packages installed from wheels).
set -uo pipefail
out=$(realpath -m "${1:?usage: bench/gpu_check.sh OUT}")
mkdir -p "$out"
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}

if [[ ${SMALL:-0} == 1 ]]; then  # rehearsal: the same commands with toy networks and counts
  toy=(--width 0.0625 --steps 1 --warmup 1) sample_width=0.0625 batch_big=16 batch=8 pggan_size=32 sample_n=64 fid_n=40 fid_batch=8
  scale=3  # the limits, for a small CPU
else
  toy=(--steps 30 --warmup 10) sample_width=1 batch_big=1024 batch=128 pggan_size=256 sample_n=65536 fid_n=2000 fid_batch=250
  scale=1
fi

bench() {  # NAME LIMIT_SECONDS SCRIPT ARGS...
  local name=$1 seconds=$(( $2 * scale ))
  shift 2
  echo "== $name: python3 $* (limit ${seconds} s)"
  timeout "$seconds" python3 "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  tail -n 4 "$out/$name.txt"
  if [[ $rc == 124 ]]; then echo "!! $name stopped at its limit of $seconds s" | tee -a "$out/$name.txt"
  elif [[ $rc != 0 ]]; then echo "!! $name failed with status $rc" | tee -a "$out/$name.txt"; fi
}

python3 -c "import torch; print('torch', torch.__version__, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee "$out/device.txt"
bench train-dcgan-b128 70 train_speed.py --model dcgan --size 64 --batch "$batch" --device "$device" "${toy[@]}"
bench train-dcgan-b1024 70 train_speed.py --model dcgan --size 64 --batch "$batch_big" --device "$device" "${toy[@]}"
bench train-wgan-gp 70 train_speed.py --model wgan-gp --size 64 --batch 64 --device "$device" "${toy[@]}"
bench train-wgan-gp-lazy 70 train_speed.py --model wgan-gp --size 64 --batch 64 --device "$device" "${toy[@]}" --set gp_every=4
bench train-pggan 70 train_speed.py --model pggan --size "$pggan_size" --batch 16 --device "$device" "${toy[@]}"
bench train-gaunet 70 train_speed.py --model gaunet --size 64 --batch 32 --device "$device" "${toy[@]}"
bench sample 60 sample_speed.py --n "$sample_n" --width "$sample_width" --device "$device"
bench fid 100 fid_speed.py --n "$fid_n" --size 64 --device "$device" --batch "$fid_batch"

echo "== summary"
grep -H -E "^(baseline|medsyn|ratio|memory|png|fid-helper|bare|FID difference)" "$out"/*.txt | sed "s|^$out/||"

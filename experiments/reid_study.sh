#!/usr/bin/env bash
# The re-ID study behind benchmarks/RESULTS.md "Do the images help re-ID?": every command, in order, resumable
# (each stage skips what is done; rerun the script after an interruption). CPU, real data.
#
#   bash experiments/reid_study.sh ../shared/data/cuhk03-market study    # DATA, then a work folder outside the repo
#   STAGES="lowdata-screen" bash experiments/reid_study.sh ...             # only some stages
#
# Low-data protocol (no leak): the generator is trained on persons 1-321 only and never sees persons 322-643; the
# re-ID model trains on persons 322-643 with K=2 real images each, plus images generated from those 2 alone; both
# are tested on the usual query/gallery (persons 644-743). Full regime: all 643 training persons, all their images,
# the bundled generator (it was trained on those same images, which the re-ID model sees anyway).
set -euo pipefail
DATA=${1:?DATA: a Market-1501-layout root, e.g. ../shared/data/cuhk03-market}
W=${2:?WORK: a folder for the runs}
STAGES=${STAGES:-"generator lowdata-screen full-screen lowdata-confirm full-confirm warp"}
RA=${RA:-reid-augment}
GEN_STEPS=${GEN_STEPS:-2000}
mkdir -p "$W"
want() { [[ " $STAGES " == *" $1 "* ]]; }

# Re-ID settings: osnet_x0_25 from scratch at the crops' 128x64, the CPU setting of RESULTS.md.
COMMON="--model osnet_x0_25 --height 128 --width 64 --batch-size 32 --lr 3e-3 --schedule cosine --device cpu"
LOW="$COMMON --persons 322-643 --real-per-id 2 --subset-seed 0 --steps 600 --warmup-steps 60 --eval-every 600"
FULL="$COMMON --steps 1200 --warmup-steps 100 --eval-every 1200"
SCREEN=0,1
CONFIRM=${CONFIRM:-10,11,12,13,14}

if want generator; then
  # The data: persons 1-321 (the generator's) and persons 322-643 with 2 images each (the re-ID model's).
  [ -d "$W/gen-people" ] || $RA subset "$DATA" -o "$W/gen-people" --persons 1-321 --poses "$DATA/annotations-train.csv"
  [ -d "$W/k2" ] || $RA subset "$DATA" -o "$W/k2" --persons 322-643 --real-per-id 2 --subset-seed 0 \
      --poses "$DATA/annotations-train.csv"
  [ -f "$W/gen-work/pairs-train.csv" ] || $RA build-pairs "$W/gen-people" --poses "$W/gen-people/annotations.csv" \
      -o "$W/gen-work" --jobs 2
  $RA train "$W/gen-people" -w "$W/gen-work" --recipe small --stage rec --set train.rec_steps=$GEN_STEPS \
      --set train.ref_steps=0 -o "$W/gen-run" --device cpu --force
  [ -f "$W/gen-1-321.safetensors" ] || $RA export-generator "$W/gen-run" -o "$W/gen-1-321.safetensors"
  [ -f "$W/gen-k2/manifest.csv" ] || $RA generate "$W/k2" --per-id 8 --checkpoint "$W/gen-1-321.safetensors" \
      --poses "$W/k2/annotations.csv" -o "$W/gen-k2" --no-score --device cpu
  [ -f "$W/gen-full/manifest.csv" ] || $RA generate "$DATA" --per-id 4 --checkpoint cuhk03-small \
      --poses "$DATA/annotations-train.csv" -o "$W/gen-full" --no-score --device cpu
fi

# One arm per way of using the images; every folder shares the first one's baselines.
low_arm() {  # NAME SEEDS OPTIONS...
  local name=$1 seeds=$2; shift 2
  local from=()
  [ "$name" = smooth-all ] || from=(--baseline-from "$W/low/smooth-all")
  $RA reid-benchmark "$DATA" --manifest "$W/gen-k2" $LOW --seeds "$seeds" -o "$W/low/$name" "${from[@]}" "$@"
}
if want lowdata-screen; then
  low_arm smooth-all $SCREEN                                   # Today's default: smoothing 0.1, drawn like originals.
  low_arm smooth-q $SCREEN --gen-ratio 0.25                    # A quarter of each batch.
  low_arm uniform-q $SCREEN --gen-ratio 0.25 --gen-labels uniform   # LSRO.
  low_arm teacher-q $SCREEN --gen-ratio 0.25 --gen-labels teacher --teacher baseline   # DG-Net's soft labels.
  low_arm teacher-gate-q $SCREEN --gen-ratio 0.25 --gen-labels teacher --teacher baseline --id-gate 0
  low_arm teacher-all $SCREEN --gen-labels teacher --teacher baseline          # Teacher labels, drawn like originals.
  low_arm smooth-half-ramp $SCREEN --gen-ratio 0.5 --gen-from 0.25             # Half of each batch after a ramp-in.
fi

full_arm() {
  local name=$1 seeds=$2; shift 2
  local from=()
  [ "$name" = smooth-all ] || from=(--baseline-from "$W/full/smooth-all")
  $RA reid-benchmark "$DATA" --manifest "$W/gen-full" $FULL --seeds "$seeds" -o "$W/full/$name" "${from[@]}" "$@"
}
if want full-screen; then
  full_arm smooth-all $SCREEN
  full_arm teacher-q $SCREEN --gen-ratio 0.25 --gen-labels teacher --teacher baseline
fi
# The confirmation (new seeds, not the screen's, so the winner is not picked by its own noise), with the setting each
# regime's screen picked (RESULTS.md): low-data, the generated images drawn like the originals with label smoothing
# 0.1 (the defaults); full, a quarter of each batch under the teacher's soft labels; then the learning-free part
# warp (`reid-augment warp`) under the low-data setting.
LOW_BEST=${LOW_BEST:-""}
FULL_BEST=${FULL_BEST:-"--gen-ratio 0.25 --gen-labels teacher --teacher baseline"}
if want lowdata-confirm; then
  $RA reid-benchmark "$DATA" --manifest "$W/gen-k2" $LOW --seeds "$CONFIRM" -o "$W/low-confirm" $LOW_BEST
fi
if want full-confirm; then
  $RA reid-benchmark "$DATA" --manifest "$W/gen-full" $FULL --seeds "$CONFIRM" -o "$W/full-confirm" $FULL_BEST
fi
if want warp; then
  [ -f "$W/warp-k2/manifest.csv" ] || $RA warp "$W/k2" --per-id 8 --poses "$W/k2/annotations.csv" -o "$W/warp-k2"
  $RA reid-benchmark "$DATA" --manifest "$W/warp-k2" $LOW --seeds "$CONFIRM" -o "$W/low-confirm-warp" \
      --baseline-from "$W/low-confirm" $LOW_BEST
fi

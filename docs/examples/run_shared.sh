#!/usr/bin/env bash
# Full-size evaluation of stories260k on ../shared/data: the numbers and plots of docs/examples.md.
# Usage (from the repository root, after `make install`): bash docs/examples/run_shared.sh
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
M=../shared/models/stories260k
D=../shared/data
OUT=docs/examples/results
mkdir -p "$OUT"
slug() { echo "$1" | sed 's/[^A-Za-z0-9.-]/_/g'; }   # plan strings as file names

# 1. choose k/k0 on the validation split (SICK trial), then score the test split once
nosink sweep --model $M --task sts --data $D/sick/SICK_trial.txt \
  --family inplace-bidir --family inplace-back --family mask0-bidir --family "mask0&bidir" --k0s 1,2 \
  --out $OUT/sweep-sick --select $OUT/best-sick.txt --record $OUT/sweep-sick.json
BEST=$(cat $OUT/best-sick.txt)
# the sweep's choice, plus a fixed set so that the tables compare the same plans on every task
plans() { printf '%s\n' baseline "$BEST" "$@" | awk '!seen[$0]++'; }
for P in $(plans inplace-bidir:k=1 mask0-bidir:k=1 inplace-bidir:k=5 mask0-bidir:k=5 "mask0&bidir:k=5,k0=2"); do
  nosink eval sts --model $M --plan "$P" --data $D/sick/SICK_test_annotated.txt --record "$OUT/sts-sick-$(slug "$P").json"
done

# 2. classification (MTEB protocol), with the paper's instructions
for P in $(plans mask0-bidir:k=1 mask0-bidir:k=5); do
  nosink eval classification --model $M --plan "$P" --train $D/banking77/train.csv --test $D/banking77/test.csv \
    --instruction "Given an online banking query, find the corresponding intents." --record "$OUT/banking77-$(slug "$P").json"
  nosink eval classification --model $M --plan "$P" --train $D/emotion/train.txt --test $D/emotion/test.txt \
    --instruction "Classify the emotion expressed in the given Twitter message into one of the six emotions: anger, fear, joy, love, sadness, and surprise." \
    --record "$OUT/emotion-$(slug "$P").json"
done

# 3. domain classification (80/20 split, SMOTE, no instruction) on the imbalanced Emotion training set
for P in $(plans mask0-bidir:k=1 mask0-bidir:k=5); do
  nosink eval domain --model $M --plan "$P" --data $D/emotion/train.txt --record "$OUT/domain-emotion-$(slug "$P").json"
done

# 4. NER probe (first sub-word labels, word-level entity F1)
for P in $(plans mask0-bidir:k=1 inplace-bidir:k=5 mask0-bidir:k=5 "mask0&bidir:k=5,k0=2"); do
  nosink eval ner --model $M --plan "$P" --train $D/wnut17/wnut17train.conll --test $D/wnut17/emerging.test.annotated \
    --max-length 64 --record "$OUT/ner-wnut17-$(slug "$P").json"
  nosink eval ner --model $M --plan "$P" --train $D/wikiann-en/train --test $D/wikiann-en/test \
    --max-length 64 --record "$OUT/ner-wikiann-$(slug "$P").json"
done

# 5. attention maps and sink scores on SICK sentences
SENTENCES=$(mktemp)   # the data's licence forbids copying it into the project: keep it out of $OUT
cut -f2 $D/sick/SICK_trial.txt | tail -n +2 > "$SENTENCES"
nosink attention --model $M --plan baseline --plan mask0-bidir:k=2 --plan mask0-bidir:k=5 \
  --texts "$SENTENCES" --tokens 12 --detect --threshold 1.5 --out $OUT/attention --record $OUT/attention.json

#!/usr/bin/env bash
# The combined fit's "16M" confirmation on the broader store, set up again from a fresh
# checkout: the store (benchmarks/broad_store.sh), the text law fitted on the matched
# "1M"-"8M" ladder and the code law on the full-store one (both from the exports in
# benchmarks/data), `codemix combine`, and the spec `codemix confirm --dry-run` writes.
# Beside it, `seed.toml`: the same spec with only the schedules NAMES (default: the
# optimum and compare-1), each pinned to the code shares its seed-0 run trained
# (benchmarks/data/broad_confirm_16m_combined.csv), so that another seed repeats those
# runs exactly even where a refit on other library builds moves the optimum's last digits.
# Compute: CPU only, about 15 minutes on 2 cores (the two fits side by side). Training
# seed.toml at "16M" (17.5M parameters, 159M tokens and 1.85e16 FLOPs a run) takes about
# 80 s a run on one H200 (the seed-0 study: 6 runs in 473 s):
#     codemix study run OUT/seed.toml --set study.seeds=1 --set train.seed=1 --quiet
# (`train.seed`: `study.seed` seeds only the sampler, so with it the runs repeat seed 0.)
#
# Usage: bash benchmarks/confirm_16m_broad.sh [OUT] [NAMES]
#        (default runs/bconf16 and optimum,compare-1)
set -euo pipefail
out=${1:-runs/bconf16}
names=${2:-optimum,compare-1}
top=$(git rev-parse --show-toplevel)
cd "$top"
bin=.venv/bin
data=benchmarks/data
store=runs/broad/store
mkdir -p "$out"
[ -f "$store/manifest.json" ] || bash benchmarks/broad_store.sh "$store"

# the ladders: the matched one at "1M"-"8M" with two seeds (160 runs), the full store's
# "1M"-"4M" grid and its "8M" rung (80)
$bin/python - "$out" "$data" <<'EOF'
import sys

import polars as pl

out, data = sys.argv[1:]
small = pl.col("size").is_in(["1M", "2M", "4M"])
frames = [pl.read_csv(f"{data}/{f}").filter(small) for f in ("broad_matched16.csv", "broad_matched16_seed1.csv")]
pl.concat([*frames, pl.read_csv(f"{data}/broad_matched16_8m.csv")], how="diagonal_relaxed").write_csv(f"{out}/matched_1m8m.csv")
full = [pl.read_csv(f"{data}/broad_ladder.csv").filter(small), pl.read_csv(f"{data}/broad_ladder_8m.csv")]
pl.concat(full, how="diagonal_relaxed").write_csv(f"{out}/full_1m8m.csv")
EOF

cols=(--mixture-cols 'mix.init.*' --mixture-cols 'mix.cooldown.*' --size-col non_embedding_params)
fit() {  # METRIC LADDER: one law, in the background, its log beside it
    [ -f "$out/$1.json" ] || $bin/codemix fit "$out/$2" "${cols[@]}" --metric "bpb.$1" \
        -o "$out/$1.json" --jobs 1 > "$out/$1.log" 2>&1
}
fit text matched_1m8m.csv & text=$!
fit code full_1m8m.csv & code=$!
wait $text || { tail -3 "$out/text.log"; exit 1; }
wait $code || { tail -3 "$out/code.log"; exit 1; }
$bin/codemix combine "$out/text.json" "$out/code.json" -o "$out/both.json"

# the ladder's spec on the broader store; confirm writes confirm.toml beside it
sed "s#^store = .*#store = \"$store\"#" studies/validation_stages.toml > "$out/ladder.toml"
$bin/codemix confirm "$out/both.json" --study "$out/ladder.toml" --size 16M --compare 3 \
    --seeds 2 --baseline paper=init.code_frac=0.25,cooldown.code_frac=0.25 \
    --out "$out" --dry-run

# seed.toml: only NAMES, at the code shares seed 0 trained, as a study of its own (name,
# folder, storage beside it); with paired seeding a run's model seed is train.seed plus its
# replicate, whatever its trial's number
$bin/python - "$out" "$data" "$names" <<'EOF'
import sys
import tomllib

import polars as pl
import tomli_w

out, data, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
text = open(f"{out}/confirm.toml").read()
spec = tomllib.loads(text)
seed0 = pl.read_csv(f"{data}/broad_confirm_16m_combined.csv")
trained = {r["choice.schedule"]: r for r in seed0.iter_rows(named=True)}
schedules = spec["search"]["schedule"]["schedules"]
print("schedule     this fit (init / cooldown code)   seed 0 trained")
for name, s in schedules.items():
    was = trained.get(name)
    was = "-" if was is None else (
        f"{was['param.stages.init.code_frac']:.4f} / {was['param.stages.cooldown.code_frac']:.4f}"
    )
    now = f"{s['stages.init.code_frac']:.4f} / {s['stages.cooldown.code_frac']:.4f}"
    print(f"{name:12s} {now:33s} {was}")
missing = [n for n in names if n not in trained]
if missing:
    sys.exit(f"no seed-0 run named {', '.join(missing)} in broad_confirm_16m_combined.csv")
spec["search"]["schedule"]["schedules"] = {
    n: {
        f"stages.{st}.code_frac": trained[n][f"param.stages.{st}.code_frac"]
        for st in ("init", "cooldown")
    }
    for n in names
}
spec["study"] |= {"name": spec["study"]["name"] + "-pinned", "out": f"{out}/seed"}
spec["study"].pop("n_trials", None)  # a grid trains all of its schedules
head = "".join(line for line in text.splitlines(True) if line.startswith("#"))
open(f"{out}/seed.toml", "w").write(
    head + f"# seed.toml: {', '.join(names)} only, at the code shares seed 0 trained\n"
    + tomli_w.dumps(spec)
)
print(f"wrote {out}/seed.toml: {', '.join(names)}")
EOF
$bin/python -c "
from codemix.optimizer.space import load_study
s = load_study('$out/seed.toml')
print(f'{s.path}: study {s.name}, {s.n_trials} trials, out {s.out}')
"

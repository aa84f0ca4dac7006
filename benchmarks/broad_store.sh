#!/usr/bin/env bash
# A store with four times the built-in text, for ladders whose larger rungs would otherwise
# read the 3.1M tokens of speeches dozens of times: the built-in corpus plus the Linux
# kernel's documentation (reST outside translations/) and Perl's (POD), both from Debian
# packages. 13.0M text and 9.5M code training tokens at BPE 4096, 47 MB on disk.
# Compute: CPU only; 45 MB of packages fetched by apt (the only step that needs the
# network: run it where a Debian mirror can be reached), then about 30 s of `prepare` on a
# 2-core CPU. The law benchmarks' `broad_*.csv` exports were trained on this store.
#
# Usage: bash benchmarks/broad_store.sh [OUT]      (default runs/broad/store)
set -euo pipefail
out=${1:-runs/broad/store}
top=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download -q linux-doc-6.1 perl-doc
for deb in *.deb; do dpkg -x "$deb" unpacked; done
mkdir kernel perl
# Flattened names (path parts joined by _) keep every file, one document each.
find unpacked -name '*.rst.gz' -path '*/Documentation/*' -not -path '*/translations/*' |
    while read -r f; do
        rel=${f#*/Documentation/}
        gunzip -c "$f" > "kernel/$(echo "${rel%.gz}" | tr / _)"
    done
find unpacked -name '*.pod' -exec cp {} perl/ \;
cd "$top"
"$top/.venv/bin/codemix" prepare --builtin --domain "text=$work/kernel/*.rst" \
    --domain "text=$work/perl/*.pod" --tokenizer bpe:4096 --out "$out"

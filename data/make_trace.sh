#!/bin/sh
# Rebuild data/wordfreq.lackey.xz and data/wordfreq.maps (needs gcc, valgrind, xz).
# The maps file is written by the program itself, inside valgrind, so its addresses are
# those of the traced run. valgrind's own messages stay in the trace (the reader skips
# them), so the file says how it was made.
set -eu
cd "$(dirname "$0")"
tmp=/tmp/wordfreq.build
rm -rf "$tmp" && mkdir -p "$tmp"
gcc -O2 -o "$tmp/wordfreq" wordfreq.c
valgrind --tool=lackey --trace-mem=yes --log-file="$tmp/trace" "$tmp/wordfreq" wordfreq.maps
xz -9 -T1 -c "$tmp/trace" > wordfreq.lackey.xz
rm -rf "$tmp"
ls -l wordfreq.lackey.xz wordfreq.maps

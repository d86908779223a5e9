"""What the report step of every shell benchmark shares (gc.sh,
materialize.sh, nights.sh, snapshot.sh). The script runs its report as
`PYTHONPATH=benches python3 - RESULTS WORK [OUT]` and imports from here:

  res       the "key<TAB>value" lines of RESULTS (benches/lib.sh `put`)
  work      the benchmark's temp dir (raw outputs: NAME.out, NAME.time)
  gen       the generated tree's summary (benches/gen_tree.py)
  f(k)      res[k] as a number (`default` when k is missing and given)
  mib, secs sizes and times as the tables print them
  emit(t)   print the report, and write it to OUT when given
  night_line(n)  the line describing night n's change
"""
import json
import sys

res = {}
for _line in open(sys.argv[1]):
    _k, _, _v = _line.rstrip("\n").partition("\t")
    res[_k] = _v
work = sys.argv[2]
out_file = sys.argv[3] if len(sys.argv) > 3 else None
gen = json.loads(res["gen_json"])


def f(k, default=None):
    if k not in res and default is not None:
        return default
    return float(res[k])


def mib(b):
    if abs(b) < 2**20:
        return f"{b / 2**10:,.1f} KiB"
    return f"{b / 2**20:,.1f} MiB" if abs(b) < 2**30 else f"{b / 2**30:,.2f} GiB"


def secs(s):
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def emit(text):
    sys.stdout.write(text)
    if out_file:
        with open(out_file, "w") as fh:
            fh.write(text)


def night_line(n):
    """The line describing night n's change (gen_tree.py --mutate n)."""
    m = json.loads(res[f"mutate{n}"])
    image = (f"rootimg.cpio.gz re-packed ({mib(m['cpio_bytes'])})" if "cpio_bytes" in m
             else "rootimg.cpio.gz left alone (--no-repack)")
    return (f"* night {n}: {m['rewritten']} files rewritten, {m['patched']} patched in place, "
            f"{m['touched']} touched (mtime only), {m['deleted']} deleted, {m['renamed']} renamed, "
            f"{m['new_files']} new, {m['new_packages']} new + {m['updated_packages']} updated packages, "
            f"{m['hosts_lines']} hosts lines, {image}; {mib(m['bytes_written'])} written "
            f"({100 * m['bytes_written'] / gen['bytes']:.1f}% of the tree's bytes)")

#!/usr/bin/env python3
"""How much really changed between two trees, for the benchmarks.

    python3 benches/treediff.py OLD NEW

Prints one JSON object about the regular files of NEW compared with the
same paths in OLD (hard-linked names counted once, by inode):

  files, bytes            regular files in NEW and their bytes
  new, new_bytes          paths missing in OLD (or not a regular file there)
  content, content_bytes  paths whose content differs (size, or the bytes
                          when the size is the same but the mtime is not)
  meta_only, meta_bytes   same bytes, other mtime (`touch`)
  unchanged               same size and mtime (content not read)
  deleted, deleted_bytes  regular files of OLD that NEW lacks
  changed_bytes           new_bytes + content_bytes: the data a tool has to
                          write at least, when it writes changed files whole

Symlinks, directories and metadata other than mtime are not counted.
"""

import json
import os
import stat
import sys


def walk(top):
    out = {}
    for d, dirs, files in os.walk(top):
        for n in files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out[os.path.relpath(p, top)] = st
    return out


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def main():
    old_top, new_top = sys.argv[1], sys.argv[2]
    old, new = walk(old_top), walk(new_top)
    r = dict(files=0, bytes=0, new=0, new_bytes=0, content=0, content_bytes=0, meta_only=0, meta_bytes=0,
             unchanged=0, deleted=0, deleted_bytes=0)
    seen = set()
    for rel, st in sorted(new.items()):
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        r["files"] += 1
        r["bytes"] += st.st_size
        o = old.get(rel)
        if o is None:
            r["new"] += 1
            r["new_bytes"] += st.st_size
        elif o.st_size != st.st_size:
            r["content"] += 1
            r["content_bytes"] += st.st_size
        elif o.st_mtime_ns == st.st_mtime_ns:
            r["unchanged"] += 1
        elif same_bytes(os.path.join(old_top, rel), os.path.join(new_top, rel)):
            r["meta_only"] += 1
            r["meta_bytes"] += st.st_size
        else:
            r["content"] += 1
            r["content_bytes"] += st.st_size
    for rel, st in old.items():
        if rel not in new:
            r["deleted"] += 1
            r["deleted_bytes"] += st.st_size
    r["changed_bytes"] = r["new_bytes"] + r["content_bytes"]
    print(json.dumps(r))


if __name__ == "__main__":
    main()

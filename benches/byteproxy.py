#!/usr/bin/env python3
"""A byte-counting TCP relay on 127.0.0.1, for the benchmarks.

    python3 benches/byteproxy.py LISTEN_PORT TARGET_PORT STATUS_FILE

Accepts connections on 127.0.0.1:LISTEN_PORT, relays each to
127.0.0.1:TARGET_PORT (the benchmark's private sshd) and counts the bytes
relayed each way: "up" from the client to the standby, "down" back. The
totals are rewritten atomically to STATUS_FILE as JSON
({"opened", "closed", "up", "down"}) when a connection opens or closes, so
a benchmark reads the bytes on the wire of one run as the difference of two
readings taken while no connection is open. Every client (hamn's libssh2,
rsync's ssh) is counted at the same place: the encrypted SSH stream, TCP
payload, headers not included.

Only loopback addresses are used. Stops on SIGTERM.
"""

import json
import os
import signal
import socket
import sys
import threading

BUF = 1 << 20

lock = threading.Lock()
totals = {"opened": 0, "closed": 0, "up": 0, "down": 0}


def write_status(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(totals, f)
    os.replace(tmp, path)


def pump(src, dst, key, done):
    buf = bytearray(BUF)
    view = memoryview(buf)
    n_total = 0
    try:
        while True:
            n = src.recv_into(buf)
            if n == 0:
                break
            dst.sendall(view[:n])
            n_total += n
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with lock:
            totals[key] += n_total
        done.set()


def handle(client, target_port, status):
    try:
        server = socket.create_connection(("127.0.0.1", target_port))
    except OSError:
        client.close()
        with lock:
            totals["closed"] += 1
            write_status(status)
        return
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    d1, d2 = threading.Event(), threading.Event()
    threading.Thread(target=pump, args=(client, server, "up", d1), daemon=True).start()
    threading.Thread(target=pump, args=(server, client, "down", d2), daemon=True).start()
    d1.wait()
    d2.wait()
    client.close()
    server.close()
    with lock:
        totals["closed"] += 1
        write_status(status)


def main():
    listen_port, target_port, status = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(16)
    with lock:
        write_status(status)
    while True:
        c, _ = ls.accept()
        with lock:
            totals["opened"] += 1
            write_status(status)
        threading.Thread(target=handle, args=(c, target_port, status), daemon=True).start()


if __name__ == "__main__":
    main()

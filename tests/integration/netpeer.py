"""A tiny network peer for real-kernel tests (run with `ip netns exec`), standard library only.

    netpeer.py READY_FILE serve ADDR PORT [PORT ...] [--connect ADDR:PORT ...]
    netpeer.py READY_FILE connect ADDR PORT COUNT [--close K]

`serve` listens and echoes; with --connect it also opens one outbound connection to each target and holds
it. `connect` opens COUNT connections, closes the first K from this side (-> TIME_WAIT), holds the rest.
When everything is in place it writes READY_FILE, then sleeps until killed. The test may run it
through a symlink named `ceph-osd` with a leading `-i N`, so that the process looks like a Ceph daemon.
"""

import socket
import sys
import threading
import time


def echo(c: socket.socket) -> None:
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()


def serve_forever(ls: socket.socket) -> None:
    while True:
        c, _ = ls.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()


def main(argv: list[str]) -> None:
    while argv and argv[0] in ("-i", "--id"):  # a Ceph-like id for the process's command line
        argv = argv[2:]
    ready, mode, rest = argv[0], argv[1], argv[2:]
    held = []
    if mode == "serve":
        targets = []
        if "--connect" in rest:
            i = rest.index("--connect")
            targets = rest[i + 1:]
            rest = rest[:i]
        addr, ports = rest[0], [int(p) for p in rest[1:]]
        for p in ports:
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((addr, p))
            ls.listen(512)
            threading.Thread(target=serve_forever, args=(ls,), daemon=True).start()
            held.append(ls)
        for t in targets:
            host, port = t.rsplit(":", 1)
            held.append(socket.create_connection((host, int(port)), timeout=10))
    elif mode == "connect":
        close = 0
        if "--close" in rest:
            close = int(rest[rest.index("--close") + 1])
            rest = rest[:rest.index("--close")]
        addr, port, count = rest[0], int(rest[1]), int(rest[2])
        conns = [socket.create_connection((addr, port), timeout=10) for _ in range(count)]
        for c in conns:
            c.sendall(b"ping")
            c.recv(4)
        for c in conns[:close]:
            c.shutdown(socket.SHUT_WR)
            c.recv(1)  # wait for the peer's FIN: our side ends in TIME_WAIT
            c.close()
        held += conns[close:]
    else:
        sys.exit(f"bad mode {mode}")
    time.sleep(0.3)  # let the last ACKs settle in conntrack
    with open(ready, "w") as f:
        f.write("ready\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])

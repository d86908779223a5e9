/* LD_PRELOAD shim for benches/nights.sh NODELAY=1: sets TCP_NODELAY on every
 * TCP socket the process connects, before the connect. Diagnostic only: it
 * shows what hamn's SSH transport gains when Nagle's algorithm is off (see
 * docs/performance.md, "Findings"); once src/remote/ssh.rs sets it itself
 * the shim changes nothing.
 *
 *   cc -shared -fPIC -O2 -o tcp_nodelay.so benches/tcp_nodelay.c -ldl
 *   LD_PRELOAD=$PWD/tcp_nodelay.so hamn sync
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_connect)(int, const struct sockaddr *, socklen_t);
    if (!real_connect)
        real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return real_connect(fd, addr, len);
}

/*
 * sys: the socket calls of the session path, made without glibc's cancellation points.
 * Those wrap every recv, send, accept4 and close in two atomic operations for
 * pthread_cancel, which nothing here uses; a session makes twenty such calls or more.
 */
#ifndef GH_SYS_H
#define GH_SYS_H
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline ssize_t gh_sys_recv(int fd, void *buf, size_t len, int flags)
{
    return syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
}

static inline ssize_t gh_sys_send(int fd, const void *buf, size_t len, int flags)
{
    return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

static inline int gh_sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

static inline int gh_sys_close(int fd)
{
    return (int)syscall(SYS_close, fd);
}

#endif

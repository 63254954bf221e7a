/*
 * notify: tells the service manager how the daemon is doing (systemd's sd_notify datagram
 * protocol on $NOTIFY_SOCKET) and keeps its watchdog fed while every worker answers.
 */
#ifndef GH_NOTIFY_H
#define GH_NOTIFY_H
#include <stdbool.h>
#include <sys/types.h>

struct gh_engine;

/* Sends one state line ("READY=1", "STOPPING=1", ...). Returns false when $NOTIFY_SOCKET is
 * unset or the datagram could not be sent; the daemon runs on either way. */
bool gh_notify(const char *state);
/* RELOADING=1 with the MONOTONIC_USEC systemd asks for. */
bool gh_notify_reloading(void);
/* MAINPID=pid then READY=1: a new process has taken over the service. */
bool gh_notify_mainpid(pid_t pid);

/* When $WATCHDOG_USEC is set (and $WATCHDOG_PID, if set, is this process), starts a thread
 * that sends WATCHDOG=1 every half period, but only while every worker has answered the
 * previous heartbeat message. Returns the period in microseconds, 0 when disabled. */
unsigned long long gh_watchdog_start(struct gh_engine *e);
void gh_watchdog_stop(void);

#endif

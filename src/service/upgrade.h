/*
 * upgrade: binary upgrade without a refused connection. The running daemon starts the new
 * binary with its listening sockets; the new one adopts them, loads the store and says it
 * is ready; only then does the old one stop accepting and let its sessions finish.
 */
#ifndef GH_UPGRADE_H
#define GH_UPGRADE_H
#include <stdbool.h>
#include <sys/types.h>

#include "core/err.h"

struct gh_engine;

#define GH_UPGRADE_TIMEOUT_MS 30000 /* a new binary not ready by then is killed */

/* ---- the old process ---- */

/* What the old process does around the start of the new one: freeze stops every change to
 * the store (the new process reads it meanwhile), thaw undoes it when the new one failed. */
struct gh_upgrade_hooks {
    void (*freeze)(void);
    void (*thaw)(void);
};

/*
 * Starts the new binary ($GATEHOUSE_UPGRADE_BIN, else the file /proc/self/exe names, i.e.
 * the path this binary was started from, even after a package replaced it) with argv and
 * every listening socket of e, and waits until it is ready or has failed. On success *child
 * is its pid, and the store is still frozen: the caller hands over and never thaws. On
 * failure the new process is gone, the store is thawed, and err says why.
 */
bool gh_upgrade_start(struct gh_engine *e, char *const argv[], unsigned workers,
                      const struct gh_upgrade_hooks *hooks, pid_t *child, gh_err *err);

/* ---- the new process ---- */

/* True when this process was started by an upgrade. *workers is set to the old process's
 * worker count, so every inherited socket of an address gets a worker. */
bool gh_upgrade_inherited(unsigned *workers);
/* Registers the inherited sockets with the engine (before the listeners are applied). */
bool gh_upgrade_adopt(struct gh_engine *e, gh_err *err);
/* Tells the old process this one accepts and owns the store. */
void gh_upgrade_ready(void);

/* ---- `gatehouse upgrade` ---- */

/* Where the daemon records its pid: DATA/gatehouse.pid. */
void gh_pidfile_path(const char *data_dir, char *out, size_t cap);
bool gh_pidfile_write(const char *path, gh_err *err);
/* Sends SIGUSR2 to the daemon named by the pid file and waits until another process has
 * written its pid there (the upgrade worked) or the old one reports it kept serving. */
int gh_upgrade_command(int argc, char **argv);

#endif

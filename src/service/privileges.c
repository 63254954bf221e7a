/*
 * privileges: the switch from root to a service user. The order matters: the capability
 * bounding set is trimmed while still root, PR_SET_KEEPCAPS keeps the permitted set across
 * setuid, and capset then leaves CAP_NET_BIND_SERVICE alone. Raw capset(2) is used so the
 * daemon needs no libcap.
 */
#include "service/privileges.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEPT_CAP CAP_NET_BIND_SERVICE

/* The store's files must stay writable by the user the daemon becomes. */
static bool give_data_dir(const char *dir, uid_t uid, gid_t gid, gh_err *err)
{
    if (chown(dir, uid, gid) < 0)
        return gh_fail_sys(err, errno, "giving data directory %s to the service user", dir);
    DIR *d = opendir(dir);
    if (!d)
        return gh_fail_sys(err, errno, "data directory %s", dir);
    struct dirent *de;
    bool ok = true;
    while (ok && (de = readdir(d))) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
            continue;
        if (fchownat(dirfd(d), de->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
            ok = gh_fail_sys(err, errno, "giving %s/%s to the service user", dir, de->d_name);
    }
    closedir(d);
    return ok;
}

static bool keep_only_bind_service(gh_err *err)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2] = {0};
    data[0].effective = data[0].permitted = data[0].inheritable = 1u << KEPT_CAP;
    if (syscall(SYS_capset, &hdr, data) < 0)
        return gh_fail_sys(err, errno, "capset CAP_NET_BIND_SERVICE");
    /* Ambient: an upgraded binary started by exec keeps the capability too. */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, KEPT_CAP, 0, 0) < 0)
        return gh_fail_sys(err, errno, "raising the ambient CAP_NET_BIND_SERVICE");
    return true;
}

bool gh_drop_privileges(const char *user, const char *data_dir, gh_err *err)
{
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (!pw)
        return errno ? gh_fail_sys(err, errno, "looking up user %s", user)
                     : gh_fail(err, "no such user: %s", user);
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    /* Already that user: a binary upgrade started by the unprivileged daemon. */
    if (uid != 0 && getuid() == uid && geteuid() == uid)
        return true;
    if (geteuid() != 0)
        return gh_fail(err, "--user %s needs the daemon to be started as root", user);
    if (!give_data_dir(data_dir, uid, gid, err))
        return false;
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
        if (cap != KEPT_CAP && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return gh_fail_sys(err, errno, "dropping capability %d from the bounding set", cap);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return gh_fail_sys(err, errno, "PR_SET_KEEPCAPS");
    if (initgroups(user, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
        return gh_fail_sys(err, errno, "switching to user %s", user);
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    if (setuid(0) == 0)
        return gh_fail(err, "switching to user %s: root could be regained", user);
    return keep_only_bind_service(err);
}

/* A full disk for HDF5's own file driver, preloaded into a test's subprocess (tests/test_reliability.py).

   While the file named by $FULL_DISK_FLAG exists, every write to a file whose path ends in ".partial.h5"
   fails with ENOSPC, as write(2) fails on a full disk; all other writes go through. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int disk_is_full_for(int fd) {
    const char *flag = getenv("FULL_DISK_FLAG");
    if (flag == NULL || access(flag, F_OK) != 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = '\0';
    const char *suffix = ".partial.h5";
    size_t len = (size_t)n, suffix_len = strlen(suffix);
    return len >= suffix_len && strcmp(path + len - suffix_len, suffix) == 0;
}

#define FAIL_WHEN_FULL(fd)           \
    if (disk_is_full_for(fd)) {      \
        errno = ENOSPC;              \
        return -1;                   \
    }

ssize_t write(int fd, const void *buf, size_t count) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    FAIL_WHEN_FULL(fd);
    return real(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite");
    FAIL_WHEN_FULL(fd);
    return real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite64");
    FAIL_WHEN_FULL(fd);
    return real(fd, buf, count, offset);
}

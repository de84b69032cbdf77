/*
 * atomic.c — atomic file replacement (see atomic.h). Tested through the writers' tests
 * (tests/test_safetensors.c, test_gguf.c, test_image.c: failed writes leave old files intact).
 */
#include "io/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

nu_status nu_atomic_begin(nu_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (!path || !*path) return nu_error(NU_ERR_INVALID_ARG, "cannot save: empty path");
    size_t n = strlen(path);
    char *tmp = malloc(n + 12);
    if (!tmp) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return nu_error(NU_ERR_IO, "%s: cannot create a temporary file beside it: %s", path, strerror(e));
    }
    struct stat old;
    mode_t mode = 0644;
    if (stat(path, &old) == 0 && S_ISREG(old.st_mode)) mode = old.st_mode & 07777;
    (void)fchmod(fd, mode);
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        int e = errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        return nu_error(NU_ERR_IO, "%s: %s", path, strerror(e));
    }
    f->path = path;
    f->tmp = tmp;
    f->fp = fp;
    return NU_OK;
}

static void fsync_folder(const char *path) {
    /* Makes the rename durable; best effort (some file systems refuse fsync on folders). */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(dir);
}

nu_status nu_atomic_end(nu_atomic_file *f, bool ok) {
    int e = ok ? 0 : errno;
    const char *what = ok ? NULL : "write";
    if (ok && fflush(f->fp) != 0) { what = "write"; e = errno; }
    if (!what && fsync(fileno(f->fp)) != 0) { what = "fsync"; e = errno; }
    if (fclose(f->fp) != 0 && !what) { what = "close"; e = errno; }
    if (!what && rename(f->tmp, f->path) != 0) { what = "rename"; e = errno; }
    nu_status st = NU_OK;
    if (what) {
        unlink(f->tmp);
        st = nu_error(NU_ERR_IO, "%s: cannot save (%s failed: %s)", f->path, what, e ? strerror(e) : "I/O error");
    } else {
        fsync_folder(f->path);
    }
    free(f->tmp);
    memset(f, 0, sizeof *f);
    return st;
}

nu_status nu_atomic_write(const char *path, const void *data, size_t n) {
    nu_atomic_file f;
    nu_status st = nu_atomic_begin(&f, path);
    if (st != NU_OK) return st;
    return nu_atomic_end(&f, n == 0 || fwrite(data, 1, n, f.fp) == n);
}

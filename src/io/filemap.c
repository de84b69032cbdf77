/*
 * filemap.c — read-only memory mapping of model files (nu_file_map_open / _release / _close).
 *
 * The whole file is mapped PROT_READ / MAP_PRIVATE, so tensor headers made over it are read-only
 * (writing through them faults): weights stay shared with the page cache and are never copied.
 * An empty file maps to data == NULL, size == 0. nu_file_map_release drops the pages this process
 * has touched (they come back from the page cache on the next read). Tested through
 * tests/test_safetensors.c and tests/test_gguf.c (every file they open goes through here) and
 * tests/test_nn.c (release).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nuance/io.h"

nu_status nu_file_map_open(const char *path, nu_file_map *m) {
    if (!m) return nu_error(NU_ERR_INVALID_ARG, "nu_file_map_open: NULL map");
    m->data = NULL;
    m->size = 0;
    m->fd = -1;
    if (!path || !*path) return nu_error(NU_ERR_INVALID_ARG, "nu_file_map_open: empty path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return nu_error(e == ENOENT ? NU_ERR_NOT_FOUND : NU_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return nu_error(NU_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return nu_error(NU_ERR_IO, "%s: is a directory", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return nu_error(NU_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
            close(fd);
            return nu_error(NU_ERR_NOMEM, "%s: file too large to map", path);
        }
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return nu_error(e == ENOMEM ? NU_ERR_NOMEM : NU_ERR_IO, "%s: cannot map %lld bytes: %s", path,
                            (long long)st.st_size, strerror(e));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    m->fd = fd;
    return NU_OK;
}

void nu_file_map_release(const nu_file_map *m) {
    /* only a real file mapping: MADV_DONTNEED on anonymous memory would zero it */
    if (m && m->fd >= 0 && m->data && m->size) (void)madvise((void *)m->data, m->size, MADV_DONTNEED);
}

void nu_file_map_close(nu_file_map *m) {
    if (!m) return;
    if (m->data && m->size) munmap((void *)m->data, m->size);
    if (m->fd >= 0) close(m->fd);
    m->data = NULL;
    m->size = 0;
    m->fd = -1;
}

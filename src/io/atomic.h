/*
 * atomic.h — atomic file replacement shared by every writer (safetensors, GGUF, images,
 * checkpoints): write to a temp file in the destination folder, fsync, rename over the path,
 * fsync the folder. On failure the temp file is removed and an existing file is untouched.
 */
#ifndef NU_IO_ATOMIC_H
#define NU_IO_ATOMIC_H

#include <stdbool.h>
#include <stdio.h>

#include "nuance/tensor.h"

typedef struct nu_atomic_file {
    const char *path; /* destination          */
    char *tmp;        /* temp file beside it   */
    FILE *fp;         /* write through this    */
} nu_atomic_file;

/* Creates the temp file (keeping an existing destination's permission bits). */
nu_status nu_atomic_begin(nu_atomic_file *f, const char *path);
/* ok: flush, fsync, rename, fsync the folder. !ok (or any failure): remove the temp file.
 * Returns NU_OK only if the destination now holds the complete new content. */
nu_status nu_atomic_end(nu_atomic_file *f, bool ok);
/* Whole-buffer convenience: begin, write, end. */
nu_status nu_atomic_write(const char *path, const void *data, size_t n);

#endif

/* File helpers shared by the tests that build corpora in a scratch directory. */
#ifndef LADLE_TESTFS_H
#define LADLE_TESTFS_H

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>

/* nftw callback: remove every entry (files first, FTW_DEPTH) */
static inline int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

/* Do two files hold the same bytes? */
static inline int file_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* root/rel in one of 8 rotating buffers (enough for the arguments of one call). */
static inline char *test_path(const char *root, const char *rel)
{
    static char buf[8][1024];
    static int next = 0;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", root, rel);
    return p;
}

#endif

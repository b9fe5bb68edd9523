/* prep: build a corpus file from text files and directories ('ladle prep').
 *
 * Every regular file under a domain's paths (directories are walked recursively, in
 * sorted order so the result is reproducible; .gz files are decompressed) is one
 * document. Each document goes to the valid split with probability valid_fraction,
 * decided by the counter RNG from (seed, domain index, document index). */
#ifndef LADLE_PREP_H
#define LADLE_PREP_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *name;       /* domain name: [A-Za-z0-9_.-]+ */
    int n_paths;
    const char **paths;     /* files or directories */
} ladle_prep_domain;

typedef struct {
    double valid_fraction;  /* default 0.05 */
    unsigned long seed;
    size_t max_doc_bytes;   /* documents longer than this are truncated (0 = no limit) */
    size_t max_domain_bytes;/* stop adding documents to a domain past this (0 = no limit) */
} ladle_prep_options;

/* Writes the corpus to out_path (via out_path.tmp, renamed when complete) and prints a
 * per-domain report (documents and bytes per split) to report. Problems with the inputs
 * (unreadable path, empty domain, bad name, duplicate name) are usage errors. */
void ladle_prep(const char *out_path, const ladle_prep_domain *domains, int n_domains,
                const ladle_prep_options *options, FILE *report);

#endif

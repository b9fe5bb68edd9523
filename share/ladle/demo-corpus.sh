#!/bin/sh
# demo-corpus.sh OUT.h5 [LADLE_BINARY]
#
# Builds the demo corpus from text that a Debian 12 machine has after
#
#   apt-get install --no-install-recommends manpages manpages-dev dict-gcide wordnet-base \
#       fortunes bible-kjv-text perl-doc python3.11-doc cmake-data vim-runtime
#
# plus what a build machine has anyway (Python, Perl, the C library's headers, the Debian
# documentation of every installed package). Nothing is downloaded.
#
# One domain per kind of text; each is cut at MAX_DOMAIN_BYTES (default 4000000) so the
# demo trains quickly. Directories are walked in sorted order, so a cut domain holds the
# first files by name. Domains built from every installed package (changelogs, licenses)
# differ between machines; the others depend only on the package versions.
#
# bible-kjv-text is not used: /usr/lib/bible.data is in its own compressed format that only
# the 'bible' program (package bible-kjv) reads.
#
# Environment: LADLE (the binary, if not given as the second argument), MAX_DOMAIN_BYTES,
# VALID_FRACTION (default 0.05), SEED (default 1), EXCLUDE (domain names to leave out), ONLY (the only domain names to keep), CLUSTERS (K: cluster the documents into K
# training domains, Soup-of-Experts' setting; the named domains are kept for evaluation).
set -eu

me=demo-corpus.sh
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $me OUT.h5 [LADLE_BINARY]" >&2
    exit 2
fi
out=$1
ladle=${2:-${LADLE:-ladle}}
max_domain_bytes=${MAX_DOMAIN_BYTES:-4000000}
valid_fraction=${VALID_FRACTION:-0.05}
seed=${SEED:-1}
split_doc_bytes=${SPLIT_DOC_BYTES:-16384}   # long files (the dictionary, changelogs) become many documents
clusters=${CLUSTERS:-}   # K > 0: training domains are K clusters of the documents, the named domains stay as labels

missing=""
missing_packages=""
domain_args=""

# domain NAME PACKAGE PATH...: add --domain NAME=PATH,PATH,... to domain_args; a missing
# path is remembered with the package that provides it. A glob that matches nothing stays
# unexpanded and so is reported missing. The list stops at about 100 kB: one argument
# may not exceed 128 kB on Linux, and the files past that point would not fit in
# MAX_DOMAIN_BYTES anyway.
domain() {
    name=$1
    package=$2
    shift 2
    # EXCLUDE: domains left out (e.g. a task held out from pretraining)
    case " ${EXCLUDE:-} " in *" $name "*) return 0 ;; esac
    # ONLY: keep just these domains (e.g. the held-out tasks, as their own corpus)
    if [ -n "${ONLY:-}" ]; then case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac; fi
    paths=""
    for p in "$@"; do
        if [ ! -e "$p" ]; then
            missing="$missing
  $p  (package $package)"
            case " $missing_packages " in
                *" $package "*) ;;
                *) missing_packages="${missing_packages:+$missing_packages }$package" ;;
            esac
            continue
        fi
        [ ${#paths} -gt 100000 ] && break
        paths="${paths:+$paths,}$p"
    done
    domain_args="$domain_args --domain $name=$paths"
}

# dict-gcide: Webster's Revised Unabridged Dictionary (1913), dictzip (gzip-compatible).
domain gcide dict-gcide /usr/share/dictd/gcide.dict.dz
# wordnet-base: WordNet 3.0 synsets with their glosses (smallest part of speech first).
domain wordnet wordnet-base /usr/share/wordnet/data.adv /usr/share/wordnet/data.verb \
    /usr/share/wordnet/data.adj /usr/share/wordnet/data.noun
# fortunes: fortune cookies (the .dat indexes are binary and skipped by prep).
domain fortunes fortunes /usr/share/games/fortunes
# manpages-dev: section 2 manual pages (system calls), roff, gzip-compressed.
domain man-syscalls manpages-dev /usr/share/man/man2
# manpages: section 7 manual pages (overviews, conventions), roff, gzip-compressed.
domain man-overview manpages /usr/share/man/man7
# perl-doc: the Perl manual, POD.
domain perl-pod perl-doc /usr/share/perl/5.36.0/pod
# python3.11-doc: the Python documentation sources, reStructuredText.
domain python-docs python3.11-doc /usr/share/doc/python3.11/html/_sources
# libpython3.11-stdlib (with any python3.11): the standard library's Python source
# (bytecode caches are binary and skipped by prep).
domain python-lib libpython3.11-stdlib /usr/lib/python3.11
# linux-libc-dev (pulled in by libc6-dev): the kernel's user-space C headers.
domain c-headers linux-libc-dev /usr/include/linux
# dpkg, apt and every other installed package: Debian changelogs, gzip-compressed.
domain changelogs dpkg /usr/share/doc/*/changelog.Debian.gz
# base-files and every installed package: license texts and copyright files.
domain licenses base-files /usr/share/common-licenses /usr/share/doc/*/copyright
# vim-runtime: the Vim help files.
domain vim-help vim-runtime /usr/share/vim/vim90/doc
# cmake-data: CMake's own modules, CMake language.
domain cmake-modules cmake-data /usr/share/cmake-3.25/Modules

if [ -n "$missing" ]; then
    echo "$me: these inputs are missing:$missing" >&2
    echo "$me: install them with: apt-get install --no-install-recommends $missing_packages" >&2
    echo "$me: (if they are installed, look for path-exclude rules in /etc/dpkg/dpkg.cfg.d: minimal images drop /usr/share/doc and /usr/share/man)" >&2
    exit 1
fi

if ! command -v "$ladle" >/dev/null 2>&1; then
    echo "$me: cannot run '$ladle': give the ladle binary as the second argument or in LADLE" >&2
    exit 1
fi

# No path here holds a space or a comma (package names and these directories do not), so
# the word splitting of $domain_args is safe.
# shellcheck disable=SC2086
exec "$ladle" prep -o "$out" --valid-fraction "$valid_fraction" --seed "$seed" \
    --max-domain-bytes "$max_domain_bytes" --split-doc-bytes "$split_doc_bytes" ${clusters:+--clusters "$clusters"} $domain_args

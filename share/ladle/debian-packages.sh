#!/bin/sh
# Install every Debian 12 package ladle needs to build, test and run its demo (as root).
#   build:  compiler, autotools, Open MPI, BLIS, LAPACKE, parallel HDF5, zlib
#   tests:  python3-torch/numpy (reference model), python3-h5py/matplotlib (analysis scripts)
#   demo:   text packages the demo corpus is made of (see share/ladle/demo-corpus.sh)
#   SLURM:  slurm-wlm, munge (make check-slurm runs a one-node cluster on localhost)
#   strace: test/disk_full.sh checks that checkpoints are fsync'd before they are renamed
set -e
export DEBIAN_FRONTEND=noninteractive
APT="apt-get -o DPkg::Lock::Timeout=600 -q"
$APT update
$APT install -y --no-install-recommends \
    build-essential autoconf automake libtool pkg-config make \
    libopenmpi-dev openmpi-bin libblis-dev liblapacke-dev libhdf5-openmpi-dev hdf5-tools zlib1g-dev \
    python3 python3-torch python3-numpy python3-h5py python3-matplotlib \
    manpages manpages-dev dict-gcide wordnet-base fortunes perl-doc \
    python3.11-doc cmake-data vim-runtime \
    slurm-wlm munge strace

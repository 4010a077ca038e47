# shellcheck shell=bash
# Example site file; this one is never sourced. Copy it to slurm/site.sh (sourced by every job when
# present), or anywhere and export MPIDECENT_SITE=/path/to/it before sbatch (MPIDECENT_SITE wins; a
# relative path starts at the repository). slurm/common.sh sources it at the start of every job of
# slurm/train.sbatch, slurm/sweep.sbatch and slurm/sweep-array.sbatch, in the repository directory,
# before the ranks are started. The job stops there (status 2) when the file returns non-zero: add
# `|| return 1` to a line that must work, as below.

# The modules the venv was built with (docs/cluster-setup.md, sections 1-2): same MPI, same HDF5.
module purge
module load gcc/12 openmpi/4.1 hdf5/1.12-mpi python/3.11 || return 1

# How the ranks are started (default mpirun, which reads the allocation itself). srun needs an MPI
# built with that PMI plug-in (`srun --mpi=list` shows the site's): docs/cluster-setup.md, section 4.
# export MPIDECENT_LAUNCHER="srun --mpi=pmix"

# Other environment for the ranks, e.g. results on a parallel file system without HDF5 file locking:
# export HDF5_USE_FILE_LOCKING=FALSE

# Partition, account, QOS, constraints CANNOT be set here: sbatch reads them before the job starts
# (and #SBATCH lines are only read from the submitted script). Set them where sbatch reads them:
#   export SBATCH_PARTITION=compute SBATCH_ACCOUNT=myproject    # in the submitting shell / ~/.bashrc
#   sbatch -p compute -A myproject --qos=normal slurm/train.sbatch jobs/quickstart.toml

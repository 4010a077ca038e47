# mpidecent developer targets. `make help` lists them.
NP    ?= 8
JOB   ?= jobs/quickstart.toml
# Extra pytest arguments for `make test`, e.g. make test ARGS='-k topology -x'
ARGS  ?=
VENV  := .venv

.PHONY: help setup run test clean

help:
	@echo "make setup   create/refresh $(VENV): Open MPI + parallel HDF5 (apt), torch CPU, mpi4py (checked binary wheel, else source), h5py from source"
	@echo "make run     setup, then mpirun -n \$$NP $(VENV)/bin/mpidecent run \$$JOB --force  (NP=$(NP), JOB=$(JOB))"
	@echo "make test    setup, then scripts/run_tests.sh \$$ARGS (unit+e2e, tests/mpi at 4 and 8 ranks)"
	@echo "make clean   remove $(VENV) and runs/ (keeps the mpi4py/h5py wheel cache in ~/.cache/mpidecent)"
	@echo "Cluster (module load instead of apt): see docs/cluster-setup.md"

setup:
	bash scripts/setup.sh

run: setup
	. scripts/mpienv.sh && mpirun -n $(NP) $(VENV)/bin/mpidecent run $(JOB) --force

test: setup
	bash scripts/run_tests.sh $(ARGS)

clean:
	rm -rf $(VENV) runs

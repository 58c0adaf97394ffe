#!/usr/bin/env bash
# A process that throws while the others wait in a collective stops the whole
# job (vpdarts::mpi::run_or_abort): the job ends well before the timeout, with
# a non-zero exit and the failing process's message; a process that never joins a
# collective stops the job after VPDARTS_MPI_TIMEOUT seconds.
#   test_abort.sh MPIEXEC vpdarts_test_mpi
set -uo pipefail
mpiexec=$1 program=$2
out=$(timeout 120 "$mpiexec" --oversubscribe --allow-run-as-root --bind-to none -np 3 "$program" --abort 2>&1)
status=$?
echo "$out" | head -n 20
[[ $status -ne 124 ]] || { echo "test_abort.sh: the job hung (killed after 120 s)" >&2; exit 1; }
[[ $status -ne 0 ]] || { echo "test_abort.sh: the job exited 0 although process 1 failed" >&2; exit 1; }
grep -qF "vpdarts_test_mpi (process 1 of 3): [vpdarts.io_error] cannot read 'data.idx' on this process" <<<"$out" ||
  { echo "test_abort.sh: the failing process's message is missing" >&2; exit 1; }
echo "test_abort.sh: the job stopped with exit $status and the message"

# a process that never joins a collective: the others give up after VPDARTS_MPI_TIMEOUT seconds, not never
start=$SECONDS
out=$(VPDARTS_MPI_TIMEOUT=3 timeout 120 "$mpiexec" --oversubscribe --allow-run-as-root --bind-to none -x VPDARTS_MPI_TIMEOUT \
  -np 2 "$program" --hang 2>&1)
status=$?
echo "$out" | head -n 20
[[ $status -ne 124 ]] || { echo "test_abort.sh: --hang: the job hung (killed after 120 s)" >&2; exit 1; }
[[ $status -ne 0 ]] || { echo "test_abort.sh: --hang: the job exited 0" >&2; exit 1; }
grep -qF "vpdarts_test_mpi (process 0 of 2): [vpdarts.state_error] mpi: process 0 of 2 waited 3 s in a sum" <<<"$out" ||
  { echo "test_abort.sh: --hang: the message of the bounded wait is missing" >&2; exit 1; }
(( SECONDS - start < 50 )) || { echo "test_abort.sh: --hang: the job took $((SECONDS - start)) s" >&2; exit 1; }
echo "test_abort.sh: a collective that never completes ended in an error after $((SECONDS - start)) s"

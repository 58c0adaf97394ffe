#!/usr/bin/env bash
# A process that throws while the others wait in a collective stops the whole
# job (vpdarts::mpi::run_or_abort): the job ends well before the timeout, with
# a non-zero exit and the failing process's message.
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

"""`python -m jobq ...`: the same command line as the `jobq` console script (jobq.cli)."""

from jobq.cli import main

# Guarded: a process-pool child started by forkserver imports this module as __mp_main__,
# and must not run the command line again.
if __name__ == "__main__":
    raise SystemExit(main())

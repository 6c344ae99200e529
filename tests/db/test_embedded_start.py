"""Starting the embedded server: processes that arrive together share one server (no initdb race)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chalicelib.db.embedded import start_embedded, stop_embedded
from tests.conftest import ROOT

STARTER = ("import sys; from pathlib import Path; from chalicelib.db.embedded import start_embedded;"
           "server, started = start_embedded(Path(sys.argv[1])); print('started' if started else 'attached')")


def test_three_processes_starting_one_new_data_directory_together_share_one_server(tmp_path: Path) -> None:
    # As the xdist workers of a fresh clone do: before the start lock, the second one to arrive failed
    # with FileExistsError (both created the directory), or both ran initdb in it.
    pgdata = tmp_path / "pg"
    starters = [subprocess.Popen([sys.executable, "-c", STARTER, str(pgdata)], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    try:
        outcomes = [starter.communicate(timeout=180) for starter in starters]
        assert [starter.returncode for starter in starters] == [0, 0, 0], [err[-2000:] for _out, err in outcomes]
        assert sorted(out.strip() for out, _err in outcomes) == ["attached", "attached", "started"]
    finally:
        server, _started = start_embedded(pgdata)
        stop_embedded(server)

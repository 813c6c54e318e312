"""The Trio shell: the only Trio code between the node's files and the books.

The data path's part of it:

* :mod:`hlbook.shell.tail` — one task per stream: files -> decoded lines (events);
* :mod:`hlbook.shell.snapshots` — where snapshots come from, and loading them;
* :mod:`hlbook.shell.ingest` — :class:`~hlbook.shell.ingest.DataPath`: runs the
  tasks, feeds the :class:`~hlbook.supervisor.Supervisor` and carries out its actions.
"""

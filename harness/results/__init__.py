"""Results that remember: every run and its tests in a database, compared with a baseline.

records: the plain data a run leaves (run, hosts, results, figures), shared by the
database layer (db), the comparison rules (compare) and the reports.
known: the reviewed known-issues file. figure_checks: figures against their history.
compare: labels and verdict of a run against its baseline. render: the comparison as
text, and the label classes of the HTML pages.
db, models, migrations/: the database (SQLite or PostgreSQL, Alembic migrations).
recorder: the pytest plugin writing each finished test (--results-db).
host_facts: what a booted host runs (Xen, dom0 kernel, microcode, firmware, BMC).
views: the database's runs and a test's history as terminal tables.
"""

import logging

# Alembic tells of every plugin it sets up at INFO (on import): noise in a run's log.
logging.getLogger("alembic").setLevel(logging.WARNING)

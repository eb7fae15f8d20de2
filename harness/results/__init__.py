"""Results that remember: every run and its tests in a database, compared with a baseline.

records: the plain data a run leaves (run, hosts, results, figures), shared by the
database layer (db), the comparison rules (compare) and the reports.
"""

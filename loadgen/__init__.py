"""`photodedup bench`, a load generator for photodedup servers: the command (command.py), the load it
drives (load.py), the payloads it sends (payload.py), the statistics (stats.py) and the report
(report.py)."""

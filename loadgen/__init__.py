"""`photodedup bench`, a load generator for photodedup servers: the command (command.py), the load it
drives (load.py), the payloads it sends (payload.py) and the statistics it reports (stats.py)."""

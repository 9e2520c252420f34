"""report.py's jobs, one module each: runs.py finds and reads run folders, groups.py averages
them over seeds beside the published numbers, tables.py and plots.py write them, cli.py is the
command line."""

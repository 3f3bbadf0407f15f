"""The lab: measurements about the package itself, run by ``groundtruth``
subcommands: falsify and its faults, calibrate, bench and the floor, measure, compare,
suite-report, qualify, merge. Nothing in the package imports it but the command line.
"""

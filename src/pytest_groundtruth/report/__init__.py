"""Reports: the parity matrix (terminal, HTML), per-test HTML extras, JSON results, the ticket."""

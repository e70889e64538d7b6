"""What callers read back: status answers, the output and report CSVs, live progress."""

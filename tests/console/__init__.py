"""The web console: its HTTP rules in-process, and the pages in Debian's chromium."""
